"""Folding decisions into per-host rows and fleet-wide figures (no I/O)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .model import Decision
from .simulate import UNKNOWABLE, Simulator


@dataclass
class HostRow:
    host: str
    actions: int = 0
    blocks: int = 0
    dry_runs: int = 0  # would act, but dry-run (guards.dry_run) or outside the rollout
    refusals: Counter = field(default_factory=Counter)
    first_action: float | None = None
    last_action: float | None = None

    def as_dict(self) -> dict:
        return {
            "host": self.host,
            "actions": self.actions,
            "blocks": self.blocks,
            "dry_runs": self.dry_runs,
            "refusals": dict(sorted(self.refusals.items())),
            "hourly_cap_hit": self.refusals.get("max_blocks_per_hour", 0) > 0,
            "first_action": self.first_action,
            "last_action": self.last_action,
        }


@dataclass
class Tally:
    """Fleet-wide counts; per-host rows until ``pop_host`` hands them out."""

    events: int = 0
    decisions: int = 0
    outcomes: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)
    by_rule: dict[str, Counter] = field(default_factory=dict)
    hosts: dict[str, HostRow] = field(default_factory=dict)
    hosts_seen: int = 0
    acting_hosts: int = 0
    hourly_cap_hosts: int = 0

    def add(self, d: Decision) -> None:
        self.decisions += 1
        key = d.outcome if d.outcome != "refused" else f"refused:{d.guard}"
        self.outcomes[d.outcome] += 1
        self.by_rule.setdefault(d.rule, Counter())[key] += 1
        row = self.hosts.setdefault(d.host, HostRow(d.host))
        if d.outcome == "act":
            row.actions += 1
            row.blocks += d.blocks
            row.first_action = d.at if row.first_action is None else row.first_action
            row.last_action = d.at
        elif d.outcome == "dry_run":
            row.dry_runs += 1
        else:
            self.refusals[d.guard] += 1
            row.refusals[d.guard] += 1

    def finish_host(self, row: HostRow) -> None:
        self.hosts_seen += 1
        self.acting_hosts += 1 if row.actions else 0
        self.hourly_cap_hosts += 1 if row.refusals.get("max_blocks_per_hour") else 0


def fleet_summary(t: Tally, sim: Simulator, quarantined: list[str], meta: dict) -> dict:
    return {
        "meta": meta,
        "events": t.events,
        "decisions": t.decisions,
        "actions": t.outcomes.get("act", 0),
        "dry_runs": t.outcomes.get("dry_run", 0),
        "refused": t.outcomes.get("refused", 0),
        "refusals_by_guard": dict(sorted(t.refusals.items())),
        "by_rule": {r: dict(sorted(c.items())) for r, c in sorted(t.by_rule.items())},
        "hosts_with_events": t.hosts_seen,
        "hosts_acting": t.acting_hosts,
        "hosts_hitting_hourly_cap": t.hourly_cap_hosts,
        "peak_concurrent_actions": sim.peak,
        "peak_at": sim.peak_at or None,
        "hosts_quarantined_in_reality": quarantined,
        "quarantine_note": "the backtest assumes every write succeeds, so it cannot predict quarantine; "
        "listed are the hosts whose controller really quarantined a block in the period "
        "(memhp_controller_quarantined_blocks)",
        "cannot_know": list(UNKNOWABLE),
    }


def summary_lines(s: dict) -> list[str]:
    m = s["meta"]
    lines = [
        f"backtest of {m['policy']} over {m['range']} ending {m['end_iso']} (step {m['step']}):",
        f"  {s['events']} alert event(s) on {s['hosts_with_events']} host(s), {s['decisions']} matching a rule",
        f"  would act {s['actions']} time(s) on {s['hosts_acting']} host(s); dry-run {s['dry_runs']}; "
        f"refused {s['refused']}",
        f"  peak of concurrent actions: {s['peak_concurrent_actions']} "
        f"(each assumed to last {m['action_duration']:g}s)",
        f"  hosts that would hit the hourly block cap: {s['hosts_hitting_hourly_cap']}",
    ]
    if s["refusals_by_guard"]:
        lines.append("  refusals by guard: " + ", ".join(f"{g} {n}" for g, n in s["refusals_by_guard"].items()))
    lines.append(f"  hosts with a block quarantined in reality: {len(s['hosts_quarantined_in_reality'])}")
    lines.append("  cannot know: " + "; ".join(s["cannot_know"]))
    return lines
