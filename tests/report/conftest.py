"""Real Prometheus (Debian package) serving a known memhp history, built once
per test session: see history.py for the story and the expected figures."""

from __future__ import annotations

import time

import pytest

from tests.helpers.prometheus import PROMETHEUS, PROMTOOL, start_prometheus
from tests.helpers.tools import require_tool
from tests.report.history import HOUR, INTERVAL, LEAD_HOURS, RANGE_HOURS, build_tsdb


@pytest.fixture(scope="session")
def history_end() -> int:
    """End of the history: a whole minute ten minutes ago (the blocks must lie
    in the past, and before the head block Prometheus opens at start)."""
    return int(time.time()) // INTERVAL * INTERVAL - 600


@pytest.fixture(scope="session")
def history_prometheus(tmp_path_factory, history_end):
    require_tool(PROMETHEUS)
    require_tool(PROMTOOL)
    work = tmp_path_factory.mktemp("report-history")
    tsdb = build_tsdb(work, history_end)
    retention = f"{(RANGE_HOURS + LEAD_HOURS) // 24 + 30}d"
    prom = start_prometheus(work / "prometheus", [], tsdb_path=tsdb, retention=retention)
    try:
        # every block is loaded before /-/ready: the history's first and last hours answer
        first = history_end - (RANGE_HOURS + LEAD_HOURS) * HOUR
        for at in (first + 120, history_end):
            prom.wait_for(
                lambda at=at: prom.query("count(instance_node:memhp_movable_kernel_ratio:ratio)", at=at),
                timeout=30,
                what=f"the history at {at}",
            )
        yield prom
    finally:
        prom.stop()
