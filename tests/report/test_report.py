"""``memhp report`` against real Prometheus serving a known history (raw
series backfilled with ``promtool tsdb create-blocks-from openmetrics``, the
recording rules of alerts/memhp.rules.yaml evaluated over it with
``promtool tsdb create-blocks-from rules``): every figure is compared with
what history.py put in.  The HTML is rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
from pathlib import Path

import pytest

from tests.helpers.prometheus import free_port
from tests.helpers.report import chromium, console_lines, fails_in_one_line, memhp, page_height
from tests.report.history import (
    BLOCK,
    EXPECTED,
    EXPECTED_ACTIONS,
    EXPECTED_FAILURES,
    EXPECTED_QUARANTINED,
    HOUR,
    NODES,
    RANGE_HOURS,
    GiB,
)

pytestmark = pytest.mark.prometheus

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = REPO / "docs" / "runbooks.md"


@pytest.fixture(scope="module")
def report(history_prometheus, history_end, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    r = memhp(
        "report",
        "--prometheus",
        history_prometheus.url,
        "--range",
        f"{RANGE_HOURS}h",
        "--end",
        str(history_end),
        "--out",
        str(out),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    data = json.loads(r.stdout)
    assert json.loads((out / "report.json").read_text()) == data
    sample = os.environ.get("MEMHP_REPORT_SAMPLE")  # docs/capacity-review.md's sample is made this way
    if sample:
        shutil.copytree(out, sample, dirs_exist_ok=True)
    return {"json": data, "out": out, "md": (out / "report.md").read_text(), "stderr": r.stderr}


def runbook_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return "".join(ch for ch in heading.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def _node(rep: dict, instance: str, node: str) -> dict:
    """A node's full row (nodes.json), with the listed extras when it is in the top-N."""
    full = json.loads((rep["out"] / "nodes.json").read_text()) if "out" in rep else rep["nodes"]
    row = next(n for n in full if n["instance"] == instance and n["node"] == node)
    listed = {(n["instance"], n["node"]): n for n in rep["json"]["nodes"]} if "json" in rep else {}
    return {**row, **listed.get((instance, node), {})}


def test_meta_and_resolution(report, history_end):
    m = report["json"]["meta"]
    assert m["end"] == history_end and m["start"] == history_end - RANGE_HOURS * HOUR
    assert m["range_seconds"] == RANGE_HOURS * HOUR
    assert m["step_seconds"] == 60  # 3 days / 11,000 points -> the 1m floor
    assert m["event_bucket_seconds"] == 3600
    assert m["warnings"] == []
    assert m["prometheus_requests"] > 10 and m["prometheus_seconds"] > 0


def test_structure_is_the_same_in_json_and_markdown(report):
    data = report["json"]
    assert list(data) == [
        "meta",
        "summary",
        "findings",
        "fleet",
        "charts",
        "nodes",
        "instances",
        "blocks",
        "files",
        "plan",
        "backtest",
    ]
    assert data["backtest"] is None  # only with --policy
    md = report["md"]
    heads = [line for line in md.splitlines() if line.startswith("## ")]
    assert heads[:5] == [
        "## At a glance",
        "## Findings",
        "## Fleet over time",
        "## Trends and forecasts",
        "## Highest-risk nodes",
    ]
    for line in data["summary"]:
        assert line in md
    for g in data["findings"]:
        assert g["text"] in md
        for e in g["entries"]:
            assert e["text"] in md


@pytest.mark.parametrize("key", sorted(EXPECTED))
def test_node_figures(report, key):
    exp, n = EXPECTED[key], _node(report, *key)
    step_h = report["json"]["meta"]["step_seconds"] / 3600
    assert n["ratio_peak"] == pytest.approx(exp["peak_ratio"])
    assert n["ratio_current"] == pytest.approx(exp["current_ratio"])
    # time above the lines, at step resolution (one step at either edge of an episode)
    assert abs(n["hours_above_critical"] - exp["hours_above_critical"]) <= 2 * step_h
    assert abs(n["hours_above_warning"] - exp["hours_above_warning"]) <= 2 * step_h
    peak, low, cur = exp["hot_unpluggable"]
    assert (n["hot_unpluggable_peak_bytes"], n["hot_unpluggable_min_bytes"], n["hot_unpluggable_current_bytes"]) == (
        peak,
        low,
        cur,
    )
    assert n["failed_offline_bytes"] == exp["failed_offline_bytes"]
    assert n["failed_offline_bytes_by_reason"] == exp["failed_offline_bytes_by_reason"]
    assert n["unofflinable_blocks_current"] == exp["unofflinable_blocks"]
    story = next(s for s in NODES if (s.instance, s.node) == key)
    assert n["online_kernel_bytes"] == story.dma32 + story.normal
    assert n["online_movable_bytes"] == story.movable_online(RANGE_HOURS)
    assert n["offline_bytes"] == story.movable_pool - story.movable_online(RANGE_HOURS)


def test_full_data_beside_the_html(report):
    import csv

    rows = list(csv.DictReader((report["out"] / "nodes.csv").open()))
    assert {(r["instance"], r["node"]) for r in rows} == set(EXPECTED)
    full = json.loads((report["out"] / "nodes.json").read_text())
    assert [(n["instance"], n["node"]) for n in full] == [(r["instance"], r["node"]) for r in rows]
    db1 = next(r for r in rows if (r["instance"], r["node"]) == ("db1", "0"))
    assert float(db1["ratio_peak"]) == 4.5 and db1["rank"] == "1"
    hosts = list(csv.DictReader((report["out"] / "instances.csv").open()))
    assert {h["instance"] for h in hosts} == {"db1", "db2", "db3"}


def test_longest_episode_and_peak_time(report, history_end):
    n = _node(report, "db1", "0")
    start = history_end - RANGE_HOURS * HOUR
    assert abs(n["longest_above_critical"]["hours"] - 14) <= 2 / 60
    assert abs(n["ratio_peak_at"] - (start + 30 * HOUR)) <= 120  # the 4.5:1 episode began at h30


def test_blocks_that_could_not_be_offlined(report):
    n = _node(report, "db1", "0")
    blocks = {b["block"]: b for b in n["failed_offline_block_list"]}
    assert set(blocks) == {"600", "601", "602", "603"}
    assert blocks["600"]["reasons"] == {"unmovable page": 3}
    assert blocks["603"]["reasons"] == {"failure to isolate range": 1}
    assert all(b["zone"] == "Movable" and b["still_online"] for b in blocks.values())


def test_failures_actions_quarantine(report):
    insts = {i["instance"]: i for i in json.loads((report["out"] / "instances.json").read_text())}
    assert set(insts) == {"db1", "db2", "db3"}
    for inst, by_reason in EXPECTED_FAILURES.items():
        assert insts[inst]["offline_failures_by_reason"] == by_reason
    assert insts["db2"]["offline_failures_by_reason"] == {} and insts["db3"]["offline_failures"] == 0
    got = {(i, a["action"], a["result"]): a["count"] for i, row in insts.items() for a in row["actions_by_result"]}
    assert got == EXPECTED_ACTIONS
    assert insts["db1"]["failed_actions_by_errno"] == [{"action": "offline", "errno": "EBUSY", "count": 4}]
    for inst, (peak, cur) in EXPECTED_QUARANTINED.items():
        assert insts[inst]["quarantined_blocks"] == {"peak": peak, "current": cur}
    assert insts["db3"]["quarantined_blocks"] == {"peak": None, "current": None}  # no controller there
    assert [i["instance"] for i in report["json"]["instances"]] == ["db1"]  # only hosts with trouble are listed


def test_fleet_totals(report):
    f = report["json"]["fleet"]
    end_h = RANGE_HOURS
    assert (f["instances"], f["nodes"]) == (3, 5)
    assert f["online_bytes"]["current"] == sum(s.dma32 + s.normal + s.movable_online(end_h) for s in NODES)
    assert f["hot_unpluggable_bytes"]["peak"] == (72 + 16 + 24 + 48 + 64) * GiB
    assert f["hot_unpluggable_bytes"]["current"] == (32 + 16 + 24 + 48 + 64) * GiB
    assert f["offline_failures_by_reason"] == {"failure to isolate range": 3, "unmovable page": 5}
    assert f["failed_offline_bytes"] == 4 * BLOCK
    assert f["nodes_above_critical_in_period"] == 1 and f["nodes_above_warning_in_period"] == 2
    assert f["failed_actions"] == 4
    assert f["ratio_max"]["peak"] == pytest.approx(4.5) and f["ratio_p50"]["current"] == pytest.approx(2.0)


def test_risk_ranking(report):
    ranking = [(r["instance"], r["node"]) for r in json.loads((report["out"] / "nodes.json").read_text())]
    assert ranking[0] == ("db1", "0")
    assert set(ranking[-2:]) == {("db3", "0"), ("db3", "1")}
    top = _node(report, "db1", "0")
    assert top["risk"] == pytest.approx(sum(top["risk_components"].values()), abs=0.1)
    assert 0 < top["risk"] <= 100


def test_findings_from_the_data(report):
    groups = {g["kind"]: g for g in report["json"]["findings"]}
    texts = [e["text"] for g in groups.values() for e in g["entries"]]
    assert report["json"]["findings"][0]["severity"] == "critical"
    crit = groups["ratio_critical"]
    assert crit["count"] == 1 and crit["alert"] == "MemhpMovableKernelRatioCritical"
    assert crit["text"].startswith("1 node spent time above 4:1")
    assert re.search(r"db1 node 0 spent 14\.0 h above 4:1", crit["entries"][0]["text"]), crit
    assert any(
        re.search(
            r"^512\.0 MiB \(4 memory blocks: 600-603, zone Movable\) could "
            r"not be offlined on db1 node 0 \(failure to isolate range: 256\.0 MiB, unmovable page: "
            r"256\.0 MiB\); 4 of them still online",
            t,
        )
        for t in texts
    ), texts
    assert groups["ratio_high"]["count"] == 1
    assert re.search(r"db2 node 0 spent 6\.0 h above 3:1", groups["ratio_high"]["entries"][0]["text"])
    assert "quarantined up to 2 memory block" in groups["quarantined"]["entries"][0]["text"]
    assert "4 controller action(s)" in texts[texts.index(groups["failed_actions"]["entries"][0]["text"])]
    assert "EBUSY: 4" in groups["failed_actions"]["entries"][0]["text"]
    assert groups["left_offline"]["count"] == 2 and groups["unofflinable"]["count"] == 1
    assert not any("db3" in t for t in texts)  # the quiet host has nothing to say
    # every finding links to an existing runbook section: its alert's, or its own when no alert fires
    anchors = {runbook_anchor(h[3:].strip()) for h in RUNBOOKS.read_text().splitlines() if h.startswith("## ")}
    for g in groups.values():
        section = g["runbook_url"].split("/docs/runbooks.md#")[1]
        assert section in anchors, g["runbook_url"]
        if g["alert"]:
            assert section == g["alert"].lower()
    # no alert fires for blocks the kernel cannot offline: not the offline-failures runbook
    assert groups["unofflinable"]["runbook_url"].endswith("/docs/runbooks.md#memhpblocksunofflinable")
    assert groups["unofflinable"]["alert"] == "MemhpBlocksUnofflinable"


def test_markdown_summary(report):
    md = report["md"]
    assert md.startswith("# memhp capacity review")
    assert "| 1 | db1 | 0 | " in md  # ranked first
    row = next(line for line in md.splitlines() if line.startswith("| 1 | db1 | 0 |"))
    assert "| 2.00:1 | 4.50:1 | 19.0 | 14.0 |" in row
    assert "| db1 | 4 | offline EBUSY: 4 |" in md
    assert "| db1 | 0 | 600 | Movable | unmovable page ×3 | yes |" in md
    assert "(https://github.com/memhp/memhp/blob/main/docs/runbooks.md#memhpmovablekernelratiocritical)" in md
    for name in ("distribution", "capacity", "failures", "actions", "worst_nodes"):
        assert f"(charts/{name}.png)" in md
    assert "[nodes.csv](nodes.csv)" in md


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", path
    return struct.unpack(">II", head[16:24])


def test_charts_are_real_pngs(report):
    from PIL import Image

    charts = report["json"]["charts"]
    expected = {
        "distribution": (1000, 520),
        "capacity": (1000, 380),
        "failures": (1000, 350),
        "actions": (1000, 350),
        "worst_nodes": (1000, 400),
    }
    assert set(charts) == set(expected)
    for name, info in charts.items():
        path = report["out"] / info["file"]
        assert _png_size(path) == expected[name] == (info["width"], info["height"])
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == expected[name]
            assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or ()) > 5  # not a blank canvas


def test_html_is_self_contained(report):
    html = (report["out"] / "report.html").read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html
    srcs = re.findall(r'\bsrc="([^"]*)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "url(" not in html


def test_console_detection_works(tmp_path):
    """The check below would see a console error: a page that logs one."""
    page = tmp_path / "canary.html"
    page.write_text('<!DOCTYPE html><p>x</p><script>console.error("canary-7731")</script>')
    r = chromium(["--dump-dom"], page, tmp_path)
    assert any("canary-7731" in line for line in console_lines(r.stderr)), r.stderr[-2000:]


def test_html_renders_in_chromium(report, tmp_path):
    page = report["out"] / "report.html"
    r = chromium(["--dump-dom"], page, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert console_lines(r.stderr) == [], console_lines(r.stderr)
    dom = r.stdout
    assert "<h1" in dom and "memhp capacity review" in dom
    assert dom.count('<img id="chart-') == 5
    assert "db1 node 0 spent 14.0 h above 4:1" in dom
    shot = report["out"] / "screenshot.png"
    r = chromium([f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars"], page, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert console_lines(r.stderr) == [], console_lines(r.stderr)
    assert _png_size(shot) == (1280, 2400)
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, tables and charts, not a blank page
    # the first screen (1280x800) holds the summary and the findings' headlines
    height = page_height(page, tmp_path)
    assert 1500 < height < 9000, height
    keep = os.environ.get("MEMHP_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_step_raised_to_the_point_limit(history_prometheus, history_end, tmp_path):
    r = memhp(
        "report",
        "--prometheus",
        history_prometheus.url,
        "--range",
        "3d",
        "--end",
        str(history_end),
        "--step",
        "10s",
        "--out",
        str(tmp_path),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["meta"]["step_seconds"] == 30  # 3d at 10s = 25,921 points > 11,000
    assert "11000" in r.stderr and "using 30s" in r.stderr
    assert data["meta"]["warnings"] and "30s" in data["meta"]["warnings"][0]


def test_selector_and_progress(history_prometheus, history_end, tmp_path):
    r = memhp(
        "report",
        "--prometheus",
        history_prometheus.url,
        "--range",
        "3d",
        "--end",
        str(history_end),
        "--selector",
        '{instance="db2"}',
        "--out",
        str(tmp_path),
        "--json",
        "--progress",
    )
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert {(n["instance"], n["node"]) for n in data["nodes"]} == {("db2", "0")}
    assert data["fleet"]["nodes"] == 1 and data["fleet"]["instances"] == 1
    assert data["fleet"]["hot_unpluggable_bytes"]["peak"] == 26 * GiB  # from the instance: rules
    assert data["meta"]["selector"] == 'instance="db2"'
    lines = [line for line in r.stderr.splitlines() if line.startswith("memhp report: [")]
    assert len(lines) > 10
    numbers = [int(re.search(r"\[\s*(\d+)\]", line).group(1)) for line in lines]
    assert numbers == list(range(1, len(numbers) + 1))  # one line per request
    # without --progress and without a terminal: quiet
    r = memhp(
        "report",
        "--prometheus",
        history_prometheus.url,
        "--range",
        "3d",
        "--end",
        str(history_end),
        "--selector",
        '{instance="db2"}',
        "--out",
        str(tmp_path / "quiet"),
    )
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "db2 node 0 spent 6.0 h above 3:1" in r.stdout
    assert "Traceback" not in r.stderr


def test_error_unreachable(tmp_path):
    port = free_port()  # nothing listens there
    fails_in_one_line(
        memhp("report", "--prometheus", f"http://127.0.0.1:{port}", "--range", "1d", "--out", str(tmp_path)),
        "cannot reach Prometheus",
        f"127.0.0.1:{port}",
    )
    assert not (tmp_path / "report.html").exists()


def test_error_empty_selector(history_prometheus, history_end, tmp_path):
    fails_in_one_line(
        memhp(
            "report",
            "--prometheus",
            history_prometheus.url,
            "--range",
            "3d",
            "--end",
            str(history_end),
            "--selector",
            '{instance="nosuchhost"}',
            "--out",
            str(tmp_path),
        ),
        "no memhp series match the selector",
        'instance="nosuchhost"',
    )


def test_error_range_without_data(history_prometheus, history_end, tmp_path):
    fails_in_one_line(
        memhp(
            "report",
            "--prometheus",
            history_prometheus.url,
            "--range",
            "2d",
            "--end",
            str(history_end - 20 * 86400),
            "--out",
            str(tmp_path),
        ),
        "no data between",
        "none has samples in that range",
    )


def test_error_bad_arguments(history_prometheus, tmp_path):
    fails_in_one_line(
        memhp("report", "--prometheus", history_prometheus.url, "--range", "3 days", "--out", str(tmp_path)),
        "not a duration",
        status=2,
    )
    fails_in_one_line(
        memhp(
            "report",
            "--prometheus",
            history_prometheus.url,
            "--range",
            "1d",
            "--selector",
            "{instance=db1}",
            "--out",
            str(tmp_path),
        ),
        "Prometheus refused",
    )
    fails_in_one_line(
        memhp("report", "--prometheus", history_prometheus.url + "/nonsense", "--range", "1d", "--out", str(tmp_path)),
        "is this a Prometheus server",
    )
