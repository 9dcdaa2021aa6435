"""The benchmark keeps working (its numbers are reported in docs/performance.md,
never asserted: timings are not test results)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scrape_vs_lsmem_runs(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.scrape_vs_lsmem",
            "--sizes",
            "300",
            "--runs",
            "1",
            "--dir",
            str(tmp_path / "bench"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| 300 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[3]) > 0 and cells[5].endswith("MiB")
    # the exposition of a 300-block tree has per-block series, so it is not tiny
    assert float(cells[7].split()[0]) > 10
    assert not (tmp_path / "bench").exists()  # trees cleaned up


def test_synthetic_tree_agrees_with_lsmem(tmp_path):
    import json

    from bench.synth_tree import make_tree
    from tests.helpers.trees import lsmem

    root = make_tree(tmp_path / "t", 200)
    listed = json.loads(lsmem(root))["memory"]
    assert len(listed) == 200
    assert {m["state"] for m in listed} == {"online", "offline"}
    assert {m["node"] for m in listed} == {0, 1}


def test_steady_scrape_runs(tmp_path):
    """A running exporter against lsmem and node_exporter (prometheus-node-exporter, from scripts/setup.sh)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.steady_scrape",
            "--sizes",
            "300",
            "--rss-size",
            "0",
            "--runs",
            "1",
            "--scrapes",
            "3",
            "--concurrent-each",
            "1",
            "--idle-seconds",
            "1",
            "--dir",
            str(tmp_path / "bench"),
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| 300 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2].endswith("ms") and cells[6].endswith("MiB") and int(cells[7]) > 0
    assert "node_exporter's default collectors on the same host:" in out
    assert not (tmp_path / "bench").exists()


def test_event_latency_bench_imports_and_documents_itself():
    """bench/event_latency.py needs a QEMU guest to measure (tests/vm/test_event_path_vm.py runs
    the same helpers); here only that it loads and says what it measures."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.event_latency", "--help"], check=True, capture_output=True, text=True, cwd=REPO
    ).stdout
    assert "baseline" in out and "--virtio-steps" in out
