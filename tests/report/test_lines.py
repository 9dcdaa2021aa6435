"""The report's lines come from the thresholds file: with other values in
memhp/thresholds.yaml every figure, sentence, table header and chart label
follows, and no 3:1 or 4:1 is left written in the code."""

from __future__ import annotations

import copy
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml

from memhp.promapi import Prometheus
from memhp.report import thresholds as report_thresholds
from memhp.report.analysis import findings, fleet_figures, rank, risk_label, risk_weights, summary
from memhp.report.charts import distribution_figure, worst_nodes_figure
from memhp.report.cli import FILES
from memhp.report.collect import SCALE, Collected, Collector
from memhp.report.render import build, to_markdown
from memhp.report.thresholds import Lines
from memhp.thresholds import load_thresholds

# the shipped lines as text, not inside a longer number ("2.50:1", "13:1")
SHIPPED = re.compile(r"(?<![\d.])[34]:1")
# a comparison with a shipped line in PromQL ("> 3", "> bool 4")
SHIPPED_QUERY = re.compile(r">\s*(?:bool\s+)?[34](?![\d.])")
STEP = 60.0


@pytest.fixture
def moved(tmp_path, monkeypatch) -> Lines:
    """The report reads a thresholds file whose lines are 2.5:1 and 5:1."""
    changed = copy.deepcopy(load_thresholds())
    changed["movable_kernel_ratio"]["warning"] = 2.5
    changed["movable_kernel_ratio"]["critical"] = 5
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(changed))
    lines = Lines.load(str(path))
    assert (lines.warning, lines.critical) == (2.5, 5.0)
    monkeypatch.setattr(report_thresholds, "LINES", lines)
    return lines


def _raw(instance: str, current: float, peak: float, warning_steps: int, critical_steps: int) -> dict:
    return {
        "instance": instance,
        "node": "0",
        "ratio_current": current,
        "ratio_min": 1.0,
        "ratio_peak": peak,
        "steps_above_warning": warning_steps,
        "steps_above_critical": critical_steps,
        "hot_peak": float(1 << 30),
        "hot_min": float(1 << 30),
        "hot_current": float(1 << 30),
    }


def _collected() -> Collected:
    c = Collected(start=0.0, end=600 * STEP, step=STEP, bucket=3600, bucket_start=0.0, max_samples=10**6)
    # a: above the critical line for 2 h, now between the two lines; b: 4.5:1 now and at
    # its peak (critical with 4:1, only above the warning line with 5:1); c: below both
    for raw in (_raw("a", 2.8, 5.6, 300, 120), _raw("b", 4.5, 4.5, 60, 0), _raw("c", 2.0, 2.2, 0, 0)):
        c.nodes[(raw["instance"], "0")] = raw
    n = len(c.grid)
    c.curves = {"ratio_p50": np.full(n, 2.4), "ratio_max": np.full(n, 4.5), "nodes_above_warning": np.full(n, 2.0)}
    c.shown = {("a", "0"): np.linspace(2.0, 5.6, n), ("b", "0"): np.full(n, 4.5)}
    return c


def _report(c: Collected) -> dict:
    rows, insts = rank(c)
    fleet = fleet_figures(c, rows, insts)
    meta = {
        "selector": "",
        "prometheus": "http://127.0.0.1:9090",
        "start_iso": "1970-01-01 00:00 UTC",
        "end_iso": "1970-01-01 10:00 UTC",
        "range_seconds": c.end - c.start,
        "step_seconds": c.step,
        "event_bucket_seconds": c.bucket,
        "generated_at": "now",
        "warnings": [],
    }
    groups = findings(rows, insts, lambda r: {}, "https://x/runbooks.md", top=10)
    return {
        "meta": meta,
        "summary": summary(fleet),
        "findings": groups,
        "fleet": fleet,
        "nodes": rows,
        "instances": [],
        "blocks": [],
        "files": dict(FILES),
    }


def test_figures_follow_the_thresholds_file(moved):
    c = _collected()
    rows, insts = rank(c)
    a = next(r for r in rows if r["instance"] == "a")
    assert a["hours_above_warning"] == 300 * STEP / 3600 and a["hours_above_critical"] == 2.0
    fleet = fleet_figures(c, rows, insts)
    assert fleet["nodes_above_warning_now"] == 2  # a (2.8) and b (4.5) are above 2.5:1
    assert fleet["nodes_above_critical_now"] == 0  # nobody is above 5:1 now
    assert fleet["nodes_above_critical_in_period"] == 1 and fleet["nodes_above_warning_in_period"] == 2
    assert risk_weights()["ratio_now"] == (30, 5.0)
    assert [risk_label(k) for k in ("hours_above_critical", "hours_above_warning")] == [
        "hours above 5:1",
        "hours above 2.5:1",
    ]


def test_findings_and_summary_name_the_lines_of_the_file(moved):
    report = _report(_collected())
    groups = {g["kind"]: g for g in report["findings"]}
    assert groups["ratio_critical"]["text"].startswith("1 node spent time above 5:1 MOVABLE:KERNEL")
    assert groups["ratio_critical"]["entries"][0]["text"].startswith(
        "a node 0 spent 2.0 h above 5:1 (5.0 h above 2.5:1)"
    )
    assert groups["ratio_high"]["text"] == "1 node spent time above 2.5:1 MOVABLE:KERNEL (never above 5:1)."
    # b at 4.5:1 is below the critical line of the file: the group stays a warning
    now = groups["ratio_now"]
    assert (now["severity"], now["alert"]) == ("warning", "MemhpMovableKernelRatioHigh")
    assert now["text"].startswith("2 nodes above 2.5:1 at the end of the period (0 above 5:1)")
    assert "1 node went above 5:1 and 2 above 2.5:1 during the period; 2 above 2.5:1 at the end." in report["summary"]
    for text in [*report["summary"], *(g["text"] for g in report["findings"])]:
        assert not SHIPPED.search(text), text


def test_document_names_the_lines_of_the_file(moved):
    md = to_markdown(build(_report(_collected()), {}))
    assert "| h > 2.5:1 | h > 5:1 |" in md
    assert "hours above 5:1 25 points (full at 24); hours above 2.5:1 10 points (full at 72)" in md
    assert "ratio now 30 points (full at 5)" in md
    assert "2.5:1 and 5:1 are the warning and critical lines of memhp's alerts" in md
    assert not SHIPPED.search(md), SHIPPED.findall(md)


def test_nothing_to_report_names_the_warning_line(moved):
    c = _collected()
    c.nodes = {}
    md = to_markdown(build(_report(c), {}))
    assert "no node went above 2.5:1," in md


def test_chart_lines_and_labels_follow_the_file(moved):
    c = _collected()
    dist = distribution_figure(c)
    assert dist is not None
    top_ax, low_ax = dist.axes
    worst = worst_nodes_figure(c, [("a", "0"), ("b", "0")])
    assert worst is not None
    for ax in (top_ax, worst.axes[0]):
        labels = ax.get_legend_handles_labels()[1]
        assert "2.5:1 (warning)" in labels and "5:1 (critical)" in labels
        dashed = sorted(float(line.get_ydata()[0]) for line in ax.get_lines() if line.get_linestyle() == "--")
        assert dashed == [2.5, 5.0]
        assert not any(SHIPPED.search(label) for label in labels)
    assert low_ax.get_ylabel() == "nodes > 2.5:1"


def test_shipped_lines_are_the_ones_of_the_packaged_file():
    shipped = load_thresholds()["movable_kernel_ratio"]
    lines = report_thresholds.LINES
    assert (lines.warning, lines.critical) == (float(shipped["warning"]), float(shipped["critical"]))
    assert (lines.warning_label, lines.critical_label) == ("3:1", "4:1")


class _Recorder(BaseHTTPRequestHandler):
    """The Prometheus query API, answering from a script: node a went above the
    warning line; the time-above subquery counts 7 steps above the warning line
    and 2 above the critical one; everything else is empty."""

    queries: list[str]

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        self._answer(url.path, urllib.parse.parse_qs(url.query))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        self._answer(urllib.parse.urlsplit(self.path).path, urllib.parse.parse_qs(body))

    def _answer(self, path: str, params: dict[str, list[str]]) -> None:
        query = params.get("query", [""])[0]
        self.queries.append(query)
        a = {"instance": "a", "node": "0"}
        if path == "/api/v1/query_range":
            data: dict = {"resultType": "matrix", "result": []}
        elif query.startswith("sum_over_time("):
            data = {"resultType": "vector", "result": [{"metric": a, "value": [0, str(7 + SCALE * 2)]}]}
        elif query.startswith("max_over_time(") and " > " in query:
            data = {"resultType": "vector", "result": [{"metric": a, "value": [0, "2.8"]}]}
        else:
            data = {"resultType": "vector", "result": []}
        body = json.dumps({"status": "success", "data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_prometheus() -> Iterator[tuple[str, list[str]]]:
    queries: list[str] = []
    handler = type("Handler", (_Recorder,), {"queries": queries})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", queries
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_queries_compare_with_the_lines_of_the_file(moved, recording_prometheus):
    url, queries = recording_prometheus
    end = 1_800_000_000.0
    col = Collector(Prometheus(url, timeout=30), "", end - 6 * 3600, end, STEP, 10**6, 1, 1)
    col.node_figures()
    col.fleet_curves()
    text = "\n".join(queries)
    assert "> 2.5" in text  # the hosts asked for time above the lines
    assert "> bool 2.5) + 65536 * (" in text and "> bool 5))" in text
    assert "> 2.5)" in text  # nodes above the warning line over time (fleet chart)
    assert not SHIPPED_QUERY.search(text), SHIPPED_QUERY.findall(text)
    row = col.c.nodes[("a", "0")]
    assert (row["steps_above_warning"], row["steps_above_critical"]) == (7, 2)
