"""``memhp report`` as a capacity plan, against a real Prometheus serving
plan_history.py's one-host history: gaps stay gaps, auto-movable headroom,
trends and forecasts, period over period, a recommendation per finding and
links into Grafana.  The HTML is rendered by headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.prometheus import PROMTOOL, prometheus_binary, start_prometheus
from tests.helpers.report import chromium, console_lines, memhp
from tests.report.plan_history import (
    AUTO_MOVABLE_RATIO,
    BLOCK,
    DATA_HOURS,
    HOUR,
    INSTANCE,
    SLOPE_PER_DAY,
    GiB,
    build_plan_tsdb,
    expected_fleet_ratio,
    kernel,
    ratio,
)

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
GRAFANA = "http://grafana.example:3000/"


@pytest.fixture(scope="module")
def plan_prometheus(tmp_path_factory):
    if prometheus_binary() is None or shutil.which(PROMTOOL) is None:
        pytest.fail("prometheus/promtool not installed (scripts/setup.sh installs them)", pytrace=False)
    end = int(time.time()) // 300 * 300 - 600
    work = tmp_path_factory.mktemp("plan")
    tsdb = build_plan_tsdb(work, end)
    prom = start_prometheus(work / "prometheus", [], tsdb_path=tsdb, retention="30d", ready_timeout=120)
    try:
        prom.wait_for(
            lambda: prom.query("count(instance_node:memhp_movable_kernel_ratio:ratio)", at=end),
            timeout=60,
            what="the plan history",
        )
        yield {"prom": prom, "end": end}
    finally:
        prom.stop()


def _run(plan_prometheus, out: Path, hours: int, *extra: str) -> dict:
    r = memhp(
        "report",
        "--prometheus",
        plan_prometheus["prom"].url,
        "--range",
        f"{hours}h",
        "--end",
        str(plan_prometheus["end"]),
        "--step",
        "5m",
        "--out",
        str(out),
        "--json",
        *extra,
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return {"json": json.loads(r.stdout), "out": out, "md": (out / "report.md").read_text()}


@pytest.fixture(scope="module")
def gappy(plan_prometheus, tmp_path_factory):
    """72 h ending with the history: its first 12 h have no data at all."""
    return _run(plan_prometheus, tmp_path_factory.mktemp("gappy"), DATA_HOURS + 12)


@pytest.fixture(scope="module")
def day(plan_prometheus, tmp_path_factory):
    """The last 24 h, with links into Grafana; the 24 h before have data too."""
    return _run(plan_prometheus, tmp_path_factory.mktemp("day"), 24, "--grafana-url", GRAFANA)


def _node(rep: dict, node: str) -> dict:
    full = json.loads((rep["out"] / "nodes.json").read_text())
    return next(n for n in full if n["instance"] == INSTANCE and n["node"] == node)


# -- bugs


def test_missing_data_is_a_gap_not_zero(gappy):
    f = gappy["json"]["fleet"]
    k = kernel("0") + kernel("1")
    assert f["online_kernel_bytes"] == {"current": k, "min": k, "peak": k}
    assert f["online_bytes"]["min"] == pytest.approx(float(ratio("0", np.array([0.0]))[0]) * kernel("0") + 26 * GiB + k)
    assert "| online kernel zones | 24.0 GiB | 24.0 GiB | 24.0 GiB |" in gappy["md"]
    # nothing to compare with before the history: the previous period is a gap, not zeros
    prev = {r["figure"]: r for r in gappy["json"]["plan"]["period_over_period"]["rows"]}
    assert all(r["previous"] is None and r["change"] is None for r in prev.values()), prev


def test_capacity_chart_leaves_the_time_before_data_empty(gappy):
    """The first sixth of the chart (12 h of 72 without data) has no fill at all."""
    from PIL import Image

    with Image.open(gappy["out"] / gappy["json"]["charts"]["capacity"]["file"]) as im:
        px = np.asarray(im.convert("RGB")).astype(int)
    kernel_blue = np.array([0x4C, 0x72, 0xB0])
    cols = np.flatnonzero((np.abs(px - kernel_blue).sum(axis=2) < 30).sum(axis=0) > 20)
    dark = np.flatnonzero((px.sum(axis=2) < 150).sum(axis=0) > 200)  # the axes' frame: its left and right spines
    left, right = dark.min(), dark.max()
    first = (cols.min() - left) / (right - left)
    assert 12 / 72 - 0.03 < first < 12 / 72 + 0.03, (left, right, cols.min())


def test_one_host_is_one_host(gappy):
    assert gappy["json"]["summary"][0] == "1 host, 2 NUMA nodes."


# -- headroom, trends, forecasts


def test_auto_movable_headroom(day):
    f = day["json"]["fleet"]["auto_movable_headroom_bytes"]
    end_h, start_h = float(DATA_HOURS), float(DATA_HOURS - 24)
    at = lambda h: AUTO_MOVABLE_RATIO * kernel("0") - float(ratio("0", np.array([h]))[0]) * kernel("0")  # noqa: E731
    assert f["current"] == pytest.approx(at(end_h), rel=1e-6) and f["min"] == pytest.approx(at(end_h), rel=1e-6)
    assert f["peak"] == pytest.approx(at(start_h), rel=0.01)
    assert _node(day, "0")["auto_movable_headroom_bytes"] == pytest.approx(at(end_h), rel=1e-6)
    assert _node(day, "1")["auto_movable_headroom_bytes"] == 0
    assert any(
        line.startswith("Auto-movable headroom") and "4.2 GiB at the end" in line for line in day["json"]["summary"]
    )
    assert (
        "| auto-movable headroom (ZONE_MOVABLE that can still be onlined) | 4.2 GiB | 4.2 GiB | 12.2 GiB |" in day["md"]
    )


def test_node_trends_and_forecasts(day):
    rising, flat = _node(day, "0"), _node(day, "1")
    assert rising["ratio_trend_per_day"] == pytest.approx(SLOPE_PER_DAY, rel=0.01)
    assert rising["days_to_warning"] == pytest.approx((3 - 2.75) / SLOPE_PER_DAY, rel=0.02)
    assert rising["days_to_critical"] == pytest.approx((4 - 2.75) / SLOPE_PER_DAY, rel=0.02)
    assert abs(flat["ratio_trend_per_day"]) < 1e-6
    assert flat["days_to_warning"] == 0.0 and flat["days_to_critical"] is None  # above now, not rising
    groups = {g["kind"]: g for g in day["json"]["findings"]}
    g = groups["ratio_rising"]
    assert g["count"] == 1 and g["entries"][0]["node"] == "0"
    assert g["entries"][0]["text"] == (
        "web1 node 0 is at 2.75:1, rising 0.50 per day: above 3:1 in 12 h, above 4:1 in 2.5 days."
    )
    assert "two halves" in day["json"]["plan"]["assumptions"] and "4× the period" in day["json"]["plan"]["assumptions"]


def test_fleet_trend_from_the_reduced_curve(day):
    t = {x["curve"]: x for x in day["json"]["plan"]["fleet_trends"]}["ratio_fleet"]
    per_day = SLOPE_PER_DAY * kernel("0") / (kernel("0") + kernel("1"))
    now = expected_fleet_ratio(DATA_HOURS)
    assert t["current"] == pytest.approx(now) and t["ratio_trend_per_day"] == pytest.approx(per_day, rel=0.01)
    assert t["days_to_warning"] == pytest.approx((3 - now) / per_day, rel=0.02)
    assert t["days_to_critical"] == pytest.approx((4 - now) / per_day, rel=0.02)
    assert "## Trends and forecasts" in day["md"]
    # 3.25 days to 4:1: the table's one decimal may round either way
    assert re.search(
        r"\| fleet \(sum MOVABLE / sum KERNEL\) \| 2\.92:1 \| \+0\.33 \| in 6 h \| in 3\.[23] days \|", day["md"]
    )


def test_period_over_period(day):
    rows = {r["figure"]: r for r in day["json"]["plan"]["period_over_period"]["rows"]}
    assert rows["ratio_current"]["current"] == pytest.approx(expected_fleet_ratio(DATA_HOURS))
    assert rows["ratio_current"]["previous"] == pytest.approx(expected_fleet_ratio(DATA_HOURS - 24))
    hot = lambda h: float(ratio("0", np.array([h]))[0]) * kernel("0") + 26 * GiB  # noqa: E731
    assert rows["hot_unpluggable_bytes_current"]["previous"] == pytest.approx(hot(DATA_HOURS - 24))
    assert rows["hot_unpluggable_bytes_current"]["change"] == pytest.approx(hot(DATA_HOURS) - hot(DATA_HOURS - 24))
    assert rows["nodes_above_warning_in_period"]["current"] == 1 == rows["nodes_above_warning_in_period"]["previous"]
    assert rows["offline_failures"]["previous"] == 0 and rows["failed_actions"]["previous"] == 0
    pp = day["json"]["plan"]["period_over_period"]
    assert pp["previous_end"] == day["json"]["meta"]["start"] == pp["previous_start"] + 24 * HOUR
    assert "| MOVABLE:KERNEL, fleet, at the end | 2.92:1 | 2.58:1 | +0.33 |" in day["md"]
    assert "| hot-unpluggable (online ZONE_MOVABLE), at the end | 70.0 GiB | 62.0 GiB | +8.0 GiB |" in day["md"]


# -- recommendations


def _entry(rep: dict, kind: str, node: str) -> dict:
    g = next(g for g in rep["json"]["findings"] if g["kind"] == kind)
    return next(e for e in g["entries"] if e["node"] == node)


def test_recommendation_per_finding(day):
    # 26 GiB movable on 8 GiB kernel: 26/3 - 8 = 0.67 GiB -> 6 blocks; 26 - 24 = 2 GiB -> 16 blocks
    assert _entry(day, "ratio_now", "1")["recommendation"] == (
        "node 1 of host web1: online 6 blocks (768.0 MiB) as kernel memory, or remove 2.0 GiB (16 blocks) of "
        "ZONE_MOVABLE, to return to 3:1; no offline block there is enough: hot-add memory first, or take "
        "ZONE_MOVABLE out."
    )
    # 8 GiB offline at 2.75:1 on 16 GiB kernel: 4 GiB fits as ZONE_MOVABLE under 3:1
    assert _entry(day, "left_offline", "0")["recommendation"] == (
        "node 0 of host web1: online the 8.0 GiB: 4.0 GiB as ZONE_MOVABLE (to stay at 3:1 or below), the other "
        "4.0 GiB as kernel memory; or remove it if it is not needed."
    )
    blocks_a_week = int(np.ceil(SLOPE_PER_DAY * 7 * kernel("0") / 3 / BLOCK))
    rec = _entry(day, "ratio_rising", "0")["recommendation"]
    assert rec.startswith("node 0 of host web1: 4.0 GiB more ZONE_MOVABLE reaches 3:1 (in 12 h at this pace)")
    assert f"online about {blocks_a_week} blocks" in rec
    md = day["md"]
    assert "**Do:** node 1 of host web1: online 6 blocks (768.0 MiB) as kernel memory" in md
    for g in day["json"]["findings"]:
        for e in g["entries"]:
            assert e["recommendation"], (g["kind"], e)


# -- Grafana


def test_links_into_grafana(day):
    dash = json.loads((REPO / "dashboards" / "memhp-node.json").read_text())
    names = [v["name"] for v in dash["templating"]["list"]]
    assert "instance" in names and "node" in names
    m = day["json"]["meta"]
    for n in day["json"]["nodes"]:
        u = urllib.parse.urlsplit(n["grafana_url"])
        assert f"{u.scheme}://{u.netloc}" == GRAFANA.rstrip("/") and u.path.startswith(f"/d/{dash['uid']}/")
        q = dict(urllib.parse.parse_qsl(u.query))
        assert q == {
            "var-instance": n["instance"],
            "var-node": n["node"],
            "from": str(int(m["start"] * 1000)),
            "to": str(int(m["end"] * 1000)),
        }
        assert f"[{n['instance']}]({n['grafana_url']})" in day["md"]
    host_links = [e["grafana_url"] for g in day["json"]["findings"] for e in g["entries"]]
    assert host_links and all(u.startswith(GRAFANA.rstrip("/") + "/d/memhp-node/") for u in host_links)


def test_no_grafana_url_no_links(gappy):
    assert all(n["grafana_url"] is None for n in gappy["json"]["nodes"])
    assert "/d/memhp-node/" not in gappy["md"]


def test_bad_grafana_url(plan_prometheus, tmp_path):
    r = memhp(
        "report",
        "--prometheus",
        plan_prometheus["prom"].url,
        "--range",
        "1h",
        "--out",
        str(tmp_path),
        "--grafana-url",
        "grafana:3000",
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("memhp report: error: --grafana-url must be an http(s) URL"), r.stderr


def test_plan_renders_in_chromium(day, tmp_path):
    page = day["out"] / "report.html"
    r = chromium(["--dump-dom"], page, tmp_path)
    assert r.returncode == 0 and console_lines(r.stderr) == [], r.stderr[-2000:]
    dom = r.stdout
    for text in ("Compared with the previous period", "Trends and forecasts", "Do:", "auto-movable headroom"):
        assert text in dom, text
    assert re.search(r'<a href="http://grafana\.example:3000/d/memhp-node/memhp-node\?var-instance=web1&amp;', dom)
