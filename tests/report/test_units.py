"""The report's pure parts: durations, step choice, selectors, event and chunk
sizing, findings grouping."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memhp.promapi import (
    MAX_POINTS,
    _per_chunk,
    auto_step,
    format_duration,
    is_sample_limit,
    is_series_limit,
    normalize_selector,
    parse_duration,
)
from memhp.report.analysis import findings, time_above
from memhp.report.collect import event_bucket, events
from memhp.report.overtime import windows


@pytest.mark.parametrize(
    "text,seconds", [("30d", 30 * 86400), ("1h30m", 5400), ("90s", 90), ("1w", 604800), ("250ms", 0.25), ("600", 600)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3 days", "1x", "-5m", "0s", "1h 30m"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (60, 5400, 3 * 86400, 90061)] == ["1m", "1h30m", "3d", "1d1h1m1s"]


@pytest.mark.parametrize("range_s", [3600, 86400, 7 * 86400, 30 * 86400, 90 * 86400, 400 * 86400])
def test_auto_step_respects_the_point_limit(range_s):
    step, note = auto_step(range_s, None)
    assert note is None and step >= 60 and range_s / step + 1 <= MAX_POINTS
    assert auto_step(30 * 86400, None)[0] == 300
    raised, note = auto_step(range_s, 1)
    assert range_s / raised + 1 <= MAX_POINTS
    assert (note is None) == (range_s + 1 <= MAX_POINTS)


def test_selector():
    assert normalize_selector('{instance=~"db.*"}') == 'instance=~"db.*"'
    assert normalize_selector('instance="a",node="0"') == 'instance="a",node="0"'
    assert normalize_selector("") == ""
    with pytest.raises(ValueError):
        normalize_selector('memhp_blocks{instance="a"}')


def test_events_expression_counts_resets_and_late_series():
    e = events("memhp_offline_failures_total", "instance, reason", 'instance="a"', 3600)
    x = 'sum by (instance, reason) (memhp_offline_failures_total{instance="a"})'
    before = 'sum by (instance, reason) (memhp_offline_failures_total{instance="a"} offset 1h)'
    assert e == f"(({x} - {before}) >= 0) or {x}"


def test_chunks_stay_under_the_sample_limit_and_the_answer_size():
    assert _per_chunk(inputs=20_000, outputs=1, max_samples=25_000_000) == 1_250
    assert _per_chunk(inputs=80_000, outputs=4, max_samples=25_000_000) == 312
    assert _per_chunk(inputs=1_000, outputs=1_000, max_samples=25_000_000) == 200  # 200,000 points per answer
    assert _per_chunk(inputs=10**9, outputs=1, max_samples=1000) == 1  # never below one step
    assert is_sample_limit("query processing would load too many samples into memory in query execution")
    assert not is_sample_limit("parse error: unexpected character")


@pytest.mark.parametrize(
    "message",
    [
        "query processing would load too many samples into memory in query execution",  # Prometheus, Mimir
        "the query exceeded the maximum number of chunks (limit: 2000000 chunks) (err-mimir-max-chunks-per-query). "
        "Consider reducing the time range and/or number of series selected by the query.",
        "the query exceeded the aggregated chunks size limit (limit: 1000 bytes) (err-mimir-max-chunks-bytes-per-query)",
        "the query hit the max number of chunks limit (limit: 2000000 chunks)",  # Cortex
        "exceeded chunks limit: limit 1000 violated (got 1200)",  # Thanos store
    ],
)
def test_limits_a_shorter_range_relieves(message):
    assert is_sample_limit(message) and not is_series_limit(message)


@pytest.mark.parametrize(
    "message",
    [
        "the query exceeded the maximum number of series (limit: 100 series) (err-mimir-max-series-per-query). "
        "Consider reducing the time range and/or number of series selected by the query.",
        "the query hit the max number of series limit (limit: 100 series)",  # Cortex
        "exceeded series limit: limit 100 violated (got 400)",  # Thanos store
    ],
)
def test_series_limits_are_not_split(message):
    assert is_series_limit(message) and not is_sample_limit(message)


@pytest.mark.parametrize("parts", [1, 2, 3, 7, 865])
def test_over_time_windows_cover_the_range_exactly(parts):
    start, end = 1000.0, 1000.0 + 72 * 3600
    w = windows(start, end, parts)
    assert 1 <= len(w) <= parts and max(n for _, n in w) == -(-(end - start) // parts)
    assert w[0][0] == end and sum(n for _, n in w) == end - start
    for (at, n), (nxt, _) in zip(w, w[1:], strict=False):
        assert nxt == at - n  # consecutive, most recent first


def test_time_above_finds_the_longest_stretch():
    grid = np.arange(9) * 60.0
    y = np.array([1, 5, 5, 1, 5, 5, 5, math.nan, 5], dtype=float)
    r = time_above(grid, y, 4, 60)
    assert r["hours"] == 3 * 60 / 3600 and r["from"] == "1970-01-01 00:04 UTC"


def _row(i: int, h3: float, h4: float) -> dict:
    return {
        "instance": f"h{i}",
        "node": "0",
        "rank": i + 1,
        "ratio_current": 2.0,
        "ratio_peak": 4.5 if h4 else 3.5,
        "hours_above_warning": h3,
        "hours_above_critical": h4,
        "failed_offline_blocks": 0,
        "failed_offline_bytes_by_reason": {},
        "hot_unpluggable_peak_bytes": 1.0,
        "hot_unpluggable_min_bytes": 1.0,
        "going_offline_peak_bytes": 0.0,
        "offline_bytes": 0.0,
        "unofflinable_blocks_peak": 0,
    }


def test_findings_are_grouped_counted_and_capped():
    rows = [_row(i, h3=float(i % 30), h4=0.0) for i in range(212)] + [_row(300, 5.0, 2.0)]
    groups = {g["kind"]: g for g in findings(rows, {}, lambda r: {}, "https://x/runbooks.md", top=10)}
    high = groups["ratio_high"]
    assert high["count"] == sum(1 for i in range(212) if i % 30) and len(high["entries"]) == 10
    assert (
        high["text"] == f"{high['count']} nodes spent time above 3:1 MOVABLE:KERNEL (never above 4:1); worst 10 below."
    )
    assert high["entries"][0]["text"].startswith("h29 node 0 spent 29.0 h above 3:1")  # longest first, then rank
    assert high["more"] == high["count"] - 10
    crit = groups["ratio_critical"]
    assert crit["count"] == 1 and crit["text"].startswith("1 node spent") and "worst" not in crit["text"]
    assert crit["runbook_url"] == "https://x/runbooks.md#memhpmovablekernelratiocritical"


def test_event_bucket():
    assert event_bucket(3 * 86400, 60) == 3600
    assert event_bucket(30 * 86400, 300) == 43200
    assert event_bucket(3600, 60) == 300
