"""What the backtest reads from history and what it decides, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

MiB = 1 << 20
DEFAULT_BLOCK_SIZE = 128 * MiB  # x86-64's usual block size, used when memhp_block_size_bytes is missing


@dataclass(frozen=True)
class Event:
    """An alert occurrence seen in Prometheus' ALERTS: it started firing at ``at``
    (the rule evaluation's own time), or it was seen resolved at ``at``."""

    at: float
    grid: float  # the query grid point where it was seen (the node state is looked up there)
    host: str
    alertname: str
    labels: tuple[tuple[str, str], ...]  # the alert's labels, alertname included, alertstate not
    resolved: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass
class NodeState:
    """One NUMA node's memory at one time, in bytes (memhp's recording rules)."""

    hot_unpluggable: float = 0.0  # online ZONE_MOVABLE that can be offlined
    offline: float = 0.0
    kernel_online: float = 0.0
    movable_accounted: float | None = None
    kernel_accounted: float | None = None


@dataclass
class HostState:
    """One host's memory at one time: its nodes and the host-wide figures."""

    nodes: dict[int, NodeState] = field(default_factory=dict)
    mem_available: float | None = None
    block_size: float | None = None
    auto_movable_ratio: float | None = None  # a ratio: 3.01 for 301%

    def node(self, n: int) -> NodeState:
        return self.nodes.setdefault(n, NodeState())


@dataclass(frozen=True)
class Decision:
    """What the policy would have done with one event."""

    at: float  # when the action would start (later than the event when it waited for a budget slot)
    host: str
    rule: str
    action: str
    outcome: str  # "act", "dry_run" (guards.dry_run or outside the rollout) or "refused"
    guard: str = ""  # the refusing guard, or why it only dry-ran ("dry_run", "rollout")
    blocks: int = 0
    detail: str = ""
    event_at: float = 0.0
