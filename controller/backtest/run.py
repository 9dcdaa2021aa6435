"""Running a backtest: read history, replay it, write the results.

Used by ``memhp-controller backtest`` and by ``memhp report --policy``.
Files in ``out`` (when given): ``backtest.json`` (fleet figures),
``backtest-actions.csv`` (every decision, written as it is made) and
``backtest-hosts.csv`` (one row per host with an event).
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from memhp.promapi import Prometheus, format_duration

from ..config import Config
from .history import History, Window, quarantined_hosts
from .model import Decision
from .simulate import Simulator
from .summary import Tally, fleet_summary

ACTION_FIELDS = ("time", "event_time", "host", "rule", "action", "outcome", "guard", "blocks", "detail")
HOST_FIELDS = ("host", "actions", "blocks", "dry_runs", "hourly_cap_hit", "refusals", "first_action", "last_action")


def iso(ts: float | None) -> str:
    return "" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(frozen=True)
class Options:
    window: Window
    policy_name: str
    action_duration: float = 30.0
    host_label: str = "instance"
    max_samples: int = 50_000_000


def backtest(prom: Prometheus, cfg: Config, opt: Options, out: Path | None) -> dict:
    t0 = time.monotonic()
    hist = History(
        prom,
        opt.window,
        {r.alertname for r in cfg.rules if r.alertname is not None},
        host_label=opt.host_label,
        max_samples=opt.max_samples,
    )
    events = hist.events(resolved_too=any(r.on_resolved for r in cfg.rules))
    states = hist.states(events)
    sim = Simulator(cfg, opt.action_duration)
    tally = Tally(events=len(events))
    actions_file = (out / "backtest-actions.csv").open("w", newline="") if out else None
    try:
        writer = csv.writer(actions_file) if actions_file else None
        if writer:
            writer.writerow(ACTION_FIELDS)
        for d in sim.run(events, lambda e: states.get((e.host, e.grid))):
            tally.add(d)
            if writer:
                writer.writerow(_action_row(d))
    finally:
        if actions_file:
            actions_file.close()
    states.clear()  # the per-host rows are next: only they stay
    _write_hosts(out, tally)
    w = opt.window
    meta = {
        "policy": opt.policy_name,
        "prometheus": prom.url,
        "start": w.start,
        "end": w.end,
        "end_iso": iso(w.end),
        "range": format_duration(w.end - w.start),
        "step": format_duration(w.step),
        "action_duration": opt.action_duration,
        "prometheus_requests": prom.requests,
        "wall_seconds": round(time.monotonic() - t0, 3),
    }
    s = fleet_summary(tally, sim, quarantined_hosts(prom, w, opt.host_label), meta)
    if out:
        (out / "backtest.json").write_text(json.dumps(s, indent=1) + "\n")
    return s


def _action_row(d: Decision) -> list:
    return [iso(d.at), iso(d.event_at), d.host, d.rule, d.action, d.outcome, d.guard, d.blocks, d.detail]


def _write_hosts(out: Path | None, tally: Tally) -> None:
    """One row per host, handed out and dropped one by one."""
    f: TextIO | None = (out / "backtest-hosts.csv").open("w", newline="") if out else None
    try:
        w = csv.writer(f) if f else None
        if w:
            w.writerow(HOST_FIELDS)
        for host in sorted(tally.hosts):
            row = tally.hosts.pop(host)
            tally.finish_host(row)
            if w:
                d = row.as_dict()
                d["refusals"] = json.dumps(d["refusals"], sort_keys=True)
                d["first_action"], d["last_action"] = iso(row.first_action), iso(row.last_action)
                w.writerow([d[k] for k in HOST_FIELDS])
    finally:
        if f:
            f.close()
