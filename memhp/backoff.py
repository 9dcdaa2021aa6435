"""Waiting after failures, in one place for the exporter and the controller.

:func:`exponential` is the wait policy: ``first``, twice that, four times
that and so on, at most ``cap``; ``spread`` draws each wait at random from
its upper part so that many clients failing together do not come back
together.  It is a tenacity wait strategy, for tenacity's ``Retrying``.

:func:`keep_running` is the loop of every long-running source: run it
again after each failure, waiting the policy's time, until told to stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_when_event_set
from tenacity.nap import sleep_using_event
from tenacity.wait import wait_base, wait_exponential, wait_random_exponential


def exponential(first: float, cap: float, *, spread: float = 0.0) -> wait_base:
    """``min(first * 2**(n-1), cap)`` after the n-th failure in a row, drawn
    uniformly from ``[1 - spread, 1]`` times that."""
    if first <= 0 or cap < first or not 0.0 <= spread <= 1.0:
        raise ValueError(f"backoff: need 0 < first <= cap and 0 <= spread <= 1, got {first}, {cap}, {spread}")
    # wait_random_exponential draws from [0, its exponential]: a fixed share plus
    # a random share of the same curve gives [1 - spread, 1] of it.
    fixed = wait_exponential(multiplier=first * (1 - spread), max=cap * (1 - spread))
    if spread == 0.0:
        return fixed
    return fixed + wait_random_exponential(multiplier=first * spread, max=cap * spread)


def keep_running(
    run: Callable[[], object],
    stop: threading.Event,
    wait: wait_base,
    on_failure: Callable[[Exception, float], object],
) -> None:
    """Call ``run`` until ``stop`` is set.  After a failure, ``on_failure(error,
    seconds)`` is told and the next call waits ``wait``: longer with each
    failure in a row, from the start again once a call returns.  Setting
    ``stop`` cuts a wait short; nothing but ``BaseException`` gets out."""

    def attempt() -> None:
        if not stop.is_set():  # a wait cut short by ``stop`` ends in one more attempt
            run()

    def failed(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        assert isinstance(error, Exception)
        on_failure(error, state.upcoming_sleep)

    retrying = Retrying(
        retry=retry_if_exception_type(Exception),
        stop=stop_when_event_set(stop),
        wait=wait,
        sleep=sleep_using_event(stop),
        before_sleep=failed,
        retry_error_callback=lambda state: None,  # stopped while failing: nothing to report
    )
    while not stop.is_set():
        retrying(attempt)
