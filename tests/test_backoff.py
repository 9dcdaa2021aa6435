"""memhp.backoff: the one wait policy and restart loop of the exporter and the controller."""

from __future__ import annotations

import threading
import time

import pytest
from tenacity import RetryCallState

from memhp.backoff import exponential, keep_running


def after_failures(n: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = n
    return state


def test_without_spread_the_wait_doubles_up_to_the_cap():
    wait = exponential(1.0, 60.0)
    assert [wait(after_failures(n)) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_spread_draws_each_wait_from_the_upper_part_of_the_curve():
    wait = exponential(0.2, 2.0, spread=0.5)
    for n in range(1, 8):
        top = min(0.2 * 2 ** (n - 1), 2.0)
        draws = [wait(after_failures(n)) for _ in range(300)]
        assert all(top / 2 - 1e-9 <= d <= top + 1e-9 for d in draws), (n, min(draws), max(draws))
        assert max(draws) - min(draws) > top / 10  # really random, not one fixed point


@pytest.mark.parametrize(("first", "cap", "spread"), [(0, 1, 0), (2, 1, 0), (1, 2, -0.1), (1, 2, 1.5)])
def test_unusable_policies_are_refused(first, cap, spread):
    with pytest.raises(ValueError, match="backoff"):
        exponential(first, cap, spread=spread)


def test_failures_in_a_row_wait_longer_and_a_success_starts_over():
    stop = threading.Event()
    outcomes = iter([OSError("a"), OSError("b"), None, OSError("c"), None])
    waits: list[tuple[str, float]] = []

    def run() -> None:
        outcome = next(outcomes, "end")
        if outcome == "end":
            stop.set()
        elif outcome is not None:
            raise outcome

    keep_running(run, stop, exponential(0.01, 1.0), lambda e, w: waits.append((str(e), w)))
    assert waits == [("a", 0.01), ("b", 0.02), ("c", 0.01)]


def test_stop_cuts_a_wait_short():
    stop = threading.Event()
    calls = []

    def run() -> None:
        calls.append(time.monotonic())
        raise OSError("always")

    t = threading.Thread(target=keep_running, args=(run, stop, exponential(600.0, 600.0), lambda e, w: None))
    t.start()
    deadline = time.monotonic() + 30
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join(30)
    assert not t.is_alive() and len(calls) == 1


def test_base_exceptions_get_out():
    with pytest.raises(KeyboardInterrupt):
        keep_running(lambda: (_ for _ in ()).throw(KeyboardInterrupt), threading.Event(), exponential(1, 1), print)
