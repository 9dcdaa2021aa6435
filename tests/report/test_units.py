"""The report's pure parts: durations, step choice, selectors, counter events."""

from __future__ import annotations

import math

import pytest

from memhp.report.analysis import counter_events, time_above
from memhp.report.collect import Series, event_bucket
from memhp.report.promapi import MAX_POINTS, auto_step, format_duration, normalize_selector, parse_duration


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


def test_counter_events_resets_and_late_series():
    t0 = 1000.0
    s = Series({"reason": "x"}, [(t0, 2), (t0 + 60, 5), (t0 + 120, 1), (t0 + 180, math.nan), (t0 + 240, 4)])
    assert counter_events([s], t0)[0].points == [(t0 + 60, 3), (t0 + 120, 1), (t0 + 240, 3)]
    late = Series({}, [(t0 + 120, 1), (t0 + 180, 2)])  # appeared with its first event
    assert counter_events([late], t0)[0].points == [(t0 + 120, 1), (t0 + 180, 1)]


def test_time_above_counts_steps_and_the_longest_stretch():
    pts = [(i * 60.0, v) for i, v in enumerate([1, 5, 5, 1, 5, 5, 5, math.nan, 5])]
    r = time_above(pts, 4, 60)
    assert r["hours"] == 6 * 60 / 3600 and r["longest_hours"] == 3 * 60 / 3600 and r["longest_from"] == 240


def test_event_bucket():
    assert event_bucket(3 * 86400, 60) == 3600
    assert event_bucket(30 * 86400, 300) == 43200
    assert event_bucket(3600, 60) == 300
