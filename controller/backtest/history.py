"""Reading the past from Prometheus: alert occurrences and node state.

PromQL does the reduction, so what comes back grows with the number of
occurrences, not with hosts x time:

* starts: ``timestamp(ALERTS{firing} unless ALERTS{firing} offset STEP)`` has
  a point only at the first grid step of each firing interval, its value the
  rule evaluation's own time;
* ends: ``ALERTS{firing} offset STEP unless ALERTS{firing}`` a point at the
  first step after one (for rules with ``on_resolved``);
* node state: memhp's recording rules one step before each of those points
  (what the controller read before it acted), ``and on(instance)`` the
  points themselves, for the hosts with an event in that time chunk only.

Queries go through memhp's bounded Prometheus client (memhp/promapi.py, the report's too), split
by time under the server's sample limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from memhp.promapi import Prometheus, format_duration

from .model import Event, HostState

HOST_BATCH = 1000  # hosts per state query: bounds the request and the answer
# Steps one state query spans: Prometheus evaluates every host of the batch at every step of
# it, so a short span keeps the work near the events (an hour at a 1m step).
SPAN_STEPS = 60

# (tag, PromQL of one figure, by (instance, node) or (instance)); {sel} takes the host matcher.
STATE_QUERIES = (
    ("hot", "sum by ({hl}, node) (instance_node:memhp_hot_unpluggable_bytes:sum{{{sel}}} offset {off})"),
    (
        "offline",
        'sum by ({hl}, node) (instance_node:memhp_blocks_bytes:sum_by_state{{state="offline",{sel}}} offset {off})',
    ),
    (
        "kernel",
        'sum by ({hl}, node) (instance_node:memhp_online_bytes:sum_by_zone{{zone!="Movable",{sel}}} offset {off})',
    ),
    ("mov_acc", "sum by ({hl}, node) (instance_node:memhp_node_movable_accounted_bytes:sum{{{sel}}} offset {off})"),
    ("ker_acc", "sum by ({hl}, node) (instance_node:memhp_node_kernel_accounted_bytes:sum{{{sel}}} offset {off})"),
    ("avail", "max by ({hl}) (memhp_memory_available_bytes{{{sel}}} offset {off})"),
    ("block_size", "max by ({hl}) (memhp_block_size_bytes{{{sel}}} offset {off})"),
    ("ratio", "max by ({hl}) (memhp_auto_movable_max_ratio{{{sel}}} offset {off})"),
)
SERIES_PER_HOST = 12  # state series a host contributes per step, for the sample-limit split (2 nodes)


@dataclass(frozen=True)
class Window:
    start: float
    end: float
    step: float


def alerts_selector(alertnames: Iterable[str], host_label: str, extra: str = "") -> str:
    names = "|".join(re.escape(n) for n in sorted(set(alertnames)))
    parts = ['alertstate="firing"', f"alertname=~{json.dumps(names)}", f'{host_label}!=""']
    if extra:
        parts.append(extra)
    return "ALERTS{" + ",".join(parts) + "}"


def host_of(value: str) -> str:
    """The host part of an instance label (``node1:9100`` -> ``node1``; ``[::1]:9100`` -> ``::1``)."""
    m = re.fullmatch(r"\[(.*)\](?::\d+)?|(.*?)(?::\d+)?", value)
    return (m.group(1) or m.group(2) or value) if m else value


class History:
    def __init__(
        self, prom: Prometheus, window: Window, alertnames: Iterable[str], *, host_label: str, max_samples: int
    ) -> None:
        self.prom, self.w, self.host_label = prom, window, host_label
        self.names = sorted(set(alertnames))
        self.max_samples = max_samples
        self.instance_of: dict[str, str] = {}  # host -> the instance label value it came from

    def _alerts(self, extra: str = "") -> str:
        return alerts_selector(self.names, self.host_label, extra)

    def alert_series(self) -> int:
        """ALERTS series of the policy's alerts in the period (to split the range queries)."""
        rng = format_duration(self.w.end - self.w.start + self.w.step)
        return self.prom.count(f"last_over_time({self._alerts()}[{rng}])", self.w.end)

    def events(self, resolved_too: bool) -> list[Event]:
        """Every start (and with ``resolved_too`` every end) of a firing interval, in time order."""
        if not self.names:
            return []
        series = max(1, self.alert_series())
        step = format_duration(self.w.step)
        a = self._alerts()
        out = list(self._points(f"timestamp({a} unless {a} offset {step})", series, resolved=False))
        if resolved_too:
            out.extend(self._points(f"({a} offset {step}) unless {a}", series, resolved=True))
        out.sort(key=lambda e: (e.at, e.host, e.labels))
        return out

    def _points(self, expr: str, series: int, *, resolved: bool) -> Iterator[Event]:
        w = self.w
        # outputs=1: an answer holds one point per firing start (or end), not one per series and step
        chunks = self.prom.range_chunks(
            expr, w.start, w.end, w.step, inputs=2 * series, outputs=1, max_samples=self.max_samples // 2
        )
        for result in chunks:
            for s in result:
                labels = {k: v for k, v in s["metric"].items() if k not in ("__name__", "alertstate")}
                instance = labels.get(self.host_label, "")
                host = host_of(instance)
                self.instance_of.setdefault(host, instance)
                key = tuple(sorted(labels.items()))
                name = labels.get("alertname", "")
                for t, v in s["values"]:
                    at = float(t) if resolved else float(v)
                    yield Event(at, float(t), host, name, key, resolved)

    def states(self, events: list[Event]) -> dict[tuple[str, float], HostState]:
        """The node state of each event's host just before the event's grid point.

        Events are taken in time order into batches of at most HOST_BATCH hosts and
        SPAN_STEPS steps; each batch is one range query over its own span only, so
        the work grows with the events, not with hosts x time."""
        out: dict[tuple[str, float], HostState] = {}
        max_steps = max(1, min(SPAN_STEPS, self.max_samples // 2 // max(1, HOST_BATCH * SERIES_PER_HOST)))
        hosts: set[str] = set()
        lo = hi = None
        n = 0
        for e in events:
            inst = self.instance_of.get(e.host, e.host)
            if lo is not None and hi is not None:
                full = inst not in hosts and len(hosts) >= HOST_BATCH
                if full or e.grid - lo >= max_steps * self.w.step:
                    self._state_chunk(sorted(hosts), lo, hi, n, out)
                    hosts, lo, n = set(), None, 0
            hosts.add(inst)
            lo = e.grid if lo is None else lo
            hi = e.grid
            n += 1
        if hosts and lo is not None and hi is not None:
            self._state_chunk(sorted(hosts), lo, hi, n, out)
        return out

    def _state_chunk(
        self, instances: list[str], lo: float, hi: float, events: int, out: dict[tuple[str, float], HostState]
    ) -> None:
        sel = f"{self.host_label}=~{json.dumps('|'.join(re.escape(i) for i in instances))}"
        step = format_duration(self.w.step)
        parts = [
            f'label_replace({q.format(sel=sel, off=step, hl=self.host_label)}, "memhp_backtest", "{tag}", "", "")'
            for tag, q in STATE_QUERIES
        ]
        a = self._alerts(sel)
        when = f"group by ({self.host_label}) (({a} unless {a} offset {step}) or (({a} offset {step}) unless {a}))"
        expr = f"({' or '.join(parts)}) and on ({self.host_label}) {when}"
        n = int((hi - lo) // self.w.step)
        data = self.prom.range_chunks(
            expr,
            lo,
            lo + n * self.w.step,
            self.w.step,
            inputs=len(instances) * SERIES_PER_HOST,
            # the answer holds the state at the events' steps only: at most this many points per step on average
            outputs=max(1, -(-events * SERIES_PER_HOST // (n + 1))),
            max_samples=self.max_samples // 2,
        )
        for result in data:
            for s in result:
                self._fold(s, out)

    def _fold(self, s: dict, out: dict[tuple[str, float], HostState]) -> None:
        m = s["metric"]
        host = host_of(m.get(self.host_label, ""))
        tag = m.get("memhp_backtest", "")
        node = m.get("node")
        for t, v in s["values"]:
            st = out.setdefault((host, float(t)), HostState())
            _set(st, tag, node, float(v))


def _set(st: HostState, tag: str, node: str | None, value: float) -> None:
    if tag == "avail":
        st.mem_available = value
    elif tag == "block_size":
        st.block_size = value
    elif tag == "ratio":
        st.auto_movable_ratio = value
    elif node is not None and node.isdigit():
        n = st.node(int(node))
        attr = {
            "hot": "hot_unpluggable",
            "offline": "offline",
            "kernel": "kernel_online",
            "mov_acc": "movable_accounted",
            "ker_acc": "kernel_accounted",
        }.get(tag)
        if attr:
            setattr(n, attr, value)


def quarantined_hosts(prom: Prometheus, w: Window, host_label: str) -> list[str]:
    """Hosts whose controller really had a quarantined block in the period (its own metric)."""
    rng = format_duration(w.end - w.start)
    res = prom.instant(f"max by ({host_label}) (max_over_time(memhp_controller_quarantined_blocks[{rng}])) > 0", w.end)
    return sorted(host_of(r["metric"].get(host_label, "")) for r in res)
