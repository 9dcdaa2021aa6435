"""The charts' time axis: every tick label is a whole time or date, on
short ranges as on long ones (not a bare "10 20 30" whose meaning sits in
an offset text)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from memhp.report.charts import distribution_figure, worst_nodes_figure
from memhp.report.collect import Collected

LABEL = re.compile(r"^(?:[A-Z][a-z]{2} \d{2}(?: \d{2}:\d{2})?|\d{2}:\d{2})$")
END = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def _collected(range_s: float) -> Collected:
    step = max(60.0, range_s / 1000)
    c = Collected(start=END - range_s, end=END, step=step, bucket=3600, bucket_start=END - range_s, max_samples=10**6)
    n = len(c.grid)
    c.curves = {"ratio_p50": np.full(n, 2.0), "ratio_max": np.linspace(1, 4.5, n), "nodes_above_warning": np.ones(n)}
    c.shown = {("a", "0"): np.linspace(1, 4.5, n)}
    return c


@pytest.mark.parametrize("hours", [1, 6, 24, 72, 14 * 24, 30 * 24, 90 * 24])
def test_tick_labels_are_times_or_dates(hours):
    c = _collected(hours * 3600.0)
    figures = [distribution_figure(c), worst_nodes_figure(c, [("a", "0")])]
    for fig in figures:
        assert fig is not None
        fig.canvas.draw()
        # a shared axis shows its labels under the lowest plot only
        labels = [t.get_text() for ax in fig.axes for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(LABEL.match(t) for t in labels), (hours, labels)
        assert all(ax.xaxis.get_offset_text().get_text() == "" for ax in fig.axes)
