"""``*_over_time`` instant queries over the whole reviewed range, split by time
when the server refuses them.

A query such as ``max_over_time(ratio[30d])`` reads every sample of every
selected series in the range.  Prometheus holds one series' window at a time,
but a Mimir or Cortex querier counts every chunk the query fetches
(``-querier.max-fetched-chunks-per-query``, 2M by default: about 55,000 series
over 72 h of 1-minute recording-rule samples) and Thanos stores count chunks
too.  Such a refusal is relieved by a shorter range, and max, min and last
over consecutive windows give exactly the figure over the whole range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from memhp.promapi import Prometheus, SampleLimitError, format_duration

Combine = Literal["max", "min", "last", "sum"]


def windows(start: float, end: float, parts: int) -> list[tuple[float, int]]:
    """(evaluation time, range in seconds) of ``parts`` consecutive windows
    covering (start, end], most recent first; together they read the same
    samples as one range of ``end - start`` at ``end``."""
    total = int(round(end - start))
    size = -(-total // parts)
    out: list[tuple[float, int]] = []
    covered = 0
    while covered < total:
        n = min(size, total - covered)
        out.append((end - covered, n))
        covered += n
    return out


class OverTime:
    """Evaluates ``expr(range)`` at the end of the range, whole if the server
    allows it, else over 2, 4, 8, ... windows; the number of windows that
    worked is kept for the next query (the queries of a report read about
    the same number of series)."""

    def __init__(self, prom: Prometheus, start: float, end: float, step: float) -> None:
        self.prom, self.start, self.end = prom, start, end
        self.max_parts = max(1, int((end - start) // step))  # a window is never shorter than one step
        self.parts = 1

    def query(self, expr: Callable[[str], str], combine: Combine) -> list[dict]:
        while True:
            try:
                return self._split(expr, combine, self.parts)
            except SampleLimitError as err:
                if self.parts >= self.max_parts:
                    raise SampleLimitError(
                        f"{err} (even over windows of one step: select fewer hosts with --selector, "
                        f"or ask for a higher limit)"
                    ) from None
                self.parts = min(self.max_parts, 2 * self.parts)

    def _split(self, expr: Callable[[str], str], combine: Combine, parts: int) -> list[dict]:
        if parts == 1:
            return self.prom.instant(expr(format_duration(self.end - self.start)), self.end)
        merged: dict[tuple, tuple[dict, float, str]] = {}
        for at, length in windows(self.start, self.end, parts):
            for e in self.prom.instant(expr(format_duration(length)), at):
                key = tuple(sorted(e["metric"].items()))
                text = e["value"][1]
                v = float(text)
                old = merged.get(key)
                if combine == "sum" and old is not None:  # sum_over_time, count_over_time: windows add up
                    merged[key] = (e["metric"], old[1] + v, repr(old[1] + v))
                elif old is None or (combine == "max" and v > old[1]) or (combine == "min" and v < old[1]):
                    merged[key] = (e["metric"], v, text)
                # "last": the most recent window that has the series wins, and it came first
        return [{"metric": m, "value": [self.end, text]} for m, _, text in merged.values()]
