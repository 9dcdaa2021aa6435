"""Deciding: which blocks, in which order, with which ``state`` token.

Pure functions of a :class:`~memhp.exporter.kernel.snapshot.Snapshot` and a
:class:`Request`; nothing here reads or writes files.  The rules of
memory-hotplug.rst that shape the plans:

* ``valid_zones`` of an offline block lists the zones it may be onlined to
  (the kernel's default first); ``online_movable``/``online_kernel`` are only
  planned where the block's ``valid_zones`` offers that zone.
* ``valid_zones`` ``none`` (mixed zones, nodes, or holes): never offlined.
* Offlining is planned from ZONE_MOVABLE by default, highest address first,
  as ``chmem -d`` does; onlining lowest address first, as ``chmem -e`` does.
* MOVABLE:KERNEL is accounted as the kernel's auto-movable policy does
  (ZONE_MOVABLE + CMA vs. kernel zones - CMA, present pages; per node too
  when ``auto_movable_numa_aware``); ``auto`` onlines to ZONE_MOVABLE only
  while the ratio allows it, and any online to ZONE_MOVABLE is refused above
  the ratio ceiling.
* Offlining never plans MemAvailable below the reserve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memhp.exporter.kernel.accounting import Balance, balance
from memhp.exporter.kernel.model import MOVABLE, MemoryBlock
from memhp.exporter.kernel.snapshot import Snapshot
from memhp.exporter.kernel.zones import KERNEL_DEFAULT_RATIO, PAGE_SIZE, is_kernel_zone

from .config import GuardsConfig, Rule
from .vocab import DEFAULT_ZONE, Action, Op, Zone, check_action_zone


class PlanRefused(Exception):
    """The request cannot be planned safely; ``guard`` names the reason."""

    def __init__(self, guard: str, detail: str) -> None:
        super().__init__(detail)
        self.guard = guard
        self.detail = detail


@dataclass(frozen=True)
class Request:
    """One action to plan, from a rule and its alert or from ``act``."""

    action: Action
    count: int | None = None
    size: int | None = None
    blocks: tuple[int, ...] | None = None  # explicit ids (``act --blocks``)
    zone: Zone | None = None
    node: int | None = None
    target_ratio: float | None = None  # rebalance: MOVABLE:KERNEL, 3.0 = 3:1
    max_blocks: int = 8
    min_available: int = 512 << 20
    max_movable_ratio: int | None = None  # percent; None = kernel's auto_movable_ratio


def rule_request(rule: Rule, guards: GuardsConfig, node: int | None) -> Request:
    """The request a policy rule makes for ``node``: the engine's, and the backtest's replay of it
    (one place, so the backtest plans what the controller would)."""
    return Request(
        action=rule.action,
        count=rule.count,
        size=rule.size,
        zone=rule.zone,
        node=node,
        target_ratio=rule.target_ratio,
        max_blocks=min(rule.max_blocks or guards.max_blocks_per_action, guards.max_blocks_per_action),
        min_available=rule.min_available if rule.min_available is not None else guards.min_available,
        max_movable_ratio=guards.max_movable_ratio,
    )


@dataclass(frozen=True)
class Step:
    block: int
    ops: tuple[Op, ...]  # state tokens, written in order


@dataclass
class Plan:
    action: Action
    steps: list[Step]
    notes: list[str] = field(default_factory=list)

    @property
    def blocks(self) -> list[int]:
        return [s.block for s in self.steps]

    def describe(self) -> list[dict]:
        return [{"block": s.block, "ops": list(s.ops)} for s in self.steps]


def kernel_zone_offered(block: MemoryBlock) -> bool:
    return any(is_kernel_zone(z) for z in block.valid_zones or ())


def movable_offered(block: MemoryBlock) -> bool:
    return MOVABLE in (block.valid_zones or ())


class _Ratio:
    """Running MOVABLE:KERNEL accounting, system-wide and per node."""

    def __init__(self, snap: Snapshot, ceiling_percent: int) -> None:
        if snap.zoneinfo is None:
            raise PlanRefused("ratio", "/proc/zoneinfo unreadable: MOVABLE:KERNEL unknown")
        self.ceiling = ceiling_percent
        self.numa_aware = snap.params.auto_movable_numa_aware is not False
        self.total = balance(snap.zoneinfo.zones)
        self.nodes = {n: balance(zs) for n, zs in snap.zoneinfo.by_node().items()}

    @staticmethod
    def _fits(b: Balance, movable_delta: int, kernel_delta: int, percent: float) -> bool:
        # mm/memory_hotplug.c: movable_pages + nr_pages <= auto_movable_ratio * kernel_early_pages / 100
        return b.movable_pages + movable_delta <= percent * (b.kernel_pages + kernel_delta) / 100

    def allows(self, node: int | None, movable_delta: int, kernel_delta: int = 0, percent: float | None = None) -> bool:
        p = self.ceiling if percent is None else percent
        if not self._fits(self.total, movable_delta, kernel_delta, p):
            return False
        if self.numa_aware and node is not None and node in self.nodes:
            return self._fits(self.nodes[node], movable_delta, kernel_delta, p)
        return True

    def add(self, node: int | None, movable_delta: int, kernel_delta: int) -> None:
        self.total = Balance(self.total.movable_pages + movable_delta, max(0, self.total.kernel_pages + kernel_delta))
        if node is not None and node in self.nodes:
            b = self.nodes[node]
            self.nodes[node] = Balance(b.movable_pages + movable_delta, max(0, b.kernel_pages + kernel_delta))

    def describe(self, node: int | None) -> str:
        """The figures a zone choice rests on, for the plan's notes (why ``auto`` chose what it chose)."""
        b = self.nodes.get(node, self.total) if self.numa_aware and node is not None else self.total
        where = f"node {node}" if self.numa_aware and node is not None and node in self.nodes else "system"
        pct = f"{100 * b.movable_pages / b.kernel_pages:.0f}%" if b.kernel_pages else "no kernel memory"
        return (
            f"{where} MOVABLE:KERNEL {pct} before this block, ceiling {self.ceiling}% (auto_movable_ratio accounting)"
        )


def ratio_ceiling(req: Request, snap: Snapshot) -> int:
    if req.max_movable_ratio is not None:
        return req.max_movable_ratio
    # 0 is a real setting: the kernel's auto-movable policy then never picks ZONE_MOVABLE
    # (auto_movable_zone_for_pfn: "if (!auto_movable_ratio) goto kernel_zone").
    kernel = snap.params.auto_movable_ratio
    return KERNEL_DEFAULT_RATIO if kernel is None else kernel


def wanted_blocks(req: Request, block_size: int) -> int:
    if req.count is not None:
        n = req.count
    elif req.size is not None:
        if req.size % block_size:
            raise PlanRefused("size", f"size {req.size} is not a multiple of the block size {block_size}")
        n = req.size // block_size
    else:
        raise PlanRefused("empty_target", "no count, size or blocks: an unbounded target is refused")
    if n <= 0:
        raise PlanRefused("empty_target", "zero blocks requested")
    if n > req.max_blocks:
        raise PlanRefused("max_blocks_per_action", f"{n} blocks requested, the per-action cap is {req.max_blocks}")
    return n


def plan(
    req: Request,
    snap: Snapshot,
    *,
    quarantined: frozenset[int] = frozenset(),
    offlined_deliberately: frozenset[int] = frozenset(),
) -> Plan:
    """The steps for ``req``; raises :class:`PlanRefused` rather than planning nothing or everything."""
    bs = snap.config.block_size_bytes
    if not bs:
        raise PlanRefused("sysfs", "block_size_bytes unreadable")
    if req.blocks is not None:
        if not req.blocks:
            raise PlanRefused("empty_target", "empty block list")
        if len(req.blocks) > req.max_blocks:
            raise PlanRefused(
                "max_blocks_per_action", f"{len(req.blocks)} blocks named, the per-action cap is {req.max_blocks}"
            )
        hit = sorted(set(req.blocks) & quarantined)
        if hit:
            raise PlanRefused("quarantine", f"block(s) {hit} are quarantined")
    try:
        check_action_zone(req.action, req.zone)
    except ValueError as e:
        raise PlanRefused("request", str(e)) from None
    fn = {
        Action.ONLINE: _plan_online,
        Action.ONLINE_NEW: _plan_online,
        Action.OFFLINE: _plan_offline,
        Action.REBALANCE: _plan_rebalance,
    }[Action(req.action)]
    p = fn(req, snap, bs, quarantined, offlined_deliberately)
    if not p.steps:
        raise PlanRefused("empty_target", "; ".join(p.notes) or "no block qualifies")
    return p


def _in_scope(b: MemoryBlock, req: Request) -> bool:
    return req.node is None or b.node == req.node


def _explicit(req: Request, snap: Snapshot) -> list[MemoryBlock]:
    out = []
    for i in req.blocks or ():
        b = snap.block(i)
        if b is None:
            raise PlanRefused("request", f"memory{i} does not exist")
        if not _in_scope(b, req):
            raise PlanRefused("request", f"memory{i} is on node {b.node}, not node {req.node}")
        out.append(b)
    return out


def _plan_online(
    req: Request, snap: Snapshot, bs: int, quarantined: frozenset[int], offlined_deliberately: frozenset[int]
) -> Plan:
    zone = req.zone or DEFAULT_ZONE[req.action]
    pages = bs // PAGE_SIZE
    ratio = _Ratio(snap, ratio_ceiling(req, snap))
    notes: list[str] = []
    if req.blocks is not None:
        candidates = _explicit(req, snap)
        n = len(candidates)
    else:
        n = wanted_blocks(req, bs)
        candidates = _offline_blocks(req, snap, quarantined, offlined_deliberately, notes)
    steps: list[Step] = []
    for b in candidates:
        if len(steps) >= n:
            break
        if b.state == "online":
            steps.append(Step(b.id, (_zone_token(zone, b),)))  # the actuator reports "already"
            continue
        if b.state != "offline" or not b.valid_zones:
            msg = f"memory{b.id}: state {b.state}, valid_zones {b.valid_zones}"
            if req.blocks is not None:
                raise PlanRefused("request", msg)
            notes.append(msg)
            continue
        token = _online_op(req, b, zone, ratio, pages, notes)
        if token is None:
            continue
        if token == Op.ONLINE_MOVABLE:
            ratio.add(b.node, pages, 0)
        # A block onlined to a kernel zone adds nothing to KERNEL: the kernel counts only
        # present_early_pages (boot memory), and an offline block being onlined is, but for boot
        # memory offlined by hand, hot-added memory.  Counting it would let the rest of this plan
        # put more into ZONE_MOVABLE than the kernel's own auto-movable policy allows.
        steps.append(Step(b.id, (token,)))
    if req.blocks is None and 0 < len(steps) < n:
        notes.append(f"only {len(steps)} of {n} requested blocks qualify")
    return Plan(req.action, steps, notes)


def _offline_blocks(
    req: Request, snap: Snapshot, quarantined: frozenset[int], offlined_deliberately: frozenset[int], notes: list[str]
) -> list[MemoryBlock]:
    """The offline blocks an online request without explicit blocks may use, lowest address first."""
    candidates = [b for b in snap.blocks if b.state == "offline" and _in_scope(b, req) and b.id not in quarantined]
    if req.action == Action.ONLINE_NEW:
        skipped = [b.id for b in candidates if b.id in offlined_deliberately]
        if skipped:
            notes.append(f"blocks offlined deliberately (journal) are not new: {skipped}")
        candidates = [b for b in candidates if b.id not in offlined_deliberately]
    candidates.sort(key=lambda b: b.id)  # lowest address first, as chmem -e
    if not candidates:
        notes.append("no offline block" + (f" on node {req.node}" if req.node is not None else ""))
    return candidates


def _online_op(req: Request, b: MemoryBlock, zone: str, ratio: _Ratio, pages: int, notes: list[str]) -> Op | None:
    """How to online the offline block ``b`` into ``zone``; None when it is
    skipped (noted, or refused for explicit blocks)."""
    valid = " ".join(b.valid_zones or ())
    if zone == "movable":
        if not movable_offered(b):
            _skip(req, notes, f"memory{b.id}: ZONE_MOVABLE not in valid_zones {valid}")
            return None
        if not ratio.allows(b.node, pages):
            raise PlanRefused(
                "ratio",
                f"onlining memory{b.id} to ZONE_MOVABLE would exceed MOVABLE:KERNEL "
                f"{ratio.ceiling}% (auto_movable_ratio accounting)",
            )
        return Op.ONLINE_MOVABLE
    if zone == "kernel":
        if not kernel_zone_offered(b):
            _skip(req, notes, f"memory{b.id}: no kernel zone in valid_zones {valid}")
            return None
        return Op.ONLINE_KERNEL
    if movable_offered(b) and ratio.allows(b.node, pages):
        notes.append(f"memory{b.id}: auto chose ZONE_MOVABLE: it fits, {ratio.describe(b.node)}")
        return Op.ONLINE_MOVABLE
    if kernel_zone_offered(b):
        why = "it would exceed the ratio" if movable_offered(b) else f"ZONE_MOVABLE not in valid_zones {valid}"
        notes.append(f"memory{b.id}: auto chose a kernel zone: ZONE_MOVABLE {why}, {ratio.describe(b.node)}")
        return Op.ONLINE_KERNEL
    _skip(req, notes, f"memory{b.id}: ZONE_MOVABLE would exceed the ratio and no kernel zone in valid_zones {valid}")
    return None


def _zone_token(zone: str, b: MemoryBlock) -> Op:
    if zone == "movable":
        return Op.ONLINE_MOVABLE
    if zone == "kernel":
        return Op.ONLINE_KERNEL
    return (
        Op.ONLINE_MOVABLE
        if b.zone == MOVABLE
        else (Op.ONLINE_KERNEL if b.zone and is_kernel_zone(b.zone) else Op.ONLINE)
    )


def _skip(req: Request, notes: list[str], msg: str) -> None:
    if req.blocks is not None:
        raise PlanRefused("request", msg)
    notes.append(msg)


def _reserve_budget(req: Request, snap: Snapshot, bs: int) -> int:
    """How many blocks may go offline and keep MemAvailable above the reserve."""
    avail = (snap.meminfo or {}).get("MemAvailable")
    if avail is None:
        raise PlanRefused("reserve", "MemAvailable unknown (/proc/meminfo): offlining refused")
    return max(0, (avail - req.min_available) // bs)


def offline_eligible(b: MemoryBlock, zone: str) -> bool:
    if b.state != "online" or not b.valid_zones or not b.offlinable:
        return False
    if zone == "movable":
        return b.zone == MOVABLE
    if zone == "kernel":
        return b.zone is not None and is_kernel_zone(b.zone)
    return True


def _plan_offline(
    req: Request, snap: Snapshot, bs: int, quarantined: frozenset[int], offlined_deliberately: frozenset[int]
) -> Plan:
    zone = req.zone or DEFAULT_ZONE[Action.OFFLINE]
    notes: list[str] = []
    budget = _reserve_budget(req, snap, bs)
    pages = bs // PAGE_SIZE
    if req.blocks is not None:
        candidates = _explicit_offline(req, snap, zone)
        n = len(candidates)
    else:
        n = wanted_blocks(req, bs)
        candidates = _online_blocks(req, snap, zone, quarantined, notes)
    to_change = [b for b in candidates if b.state == "online"][:n]
    if len(to_change) > budget:
        if req.blocks is not None or budget == 0:
            raise PlanRefused(
                "reserve",
                f"offlining {len(to_change)} block(s) would take MemAvailable below the "
                f"reserve of {req.min_available} bytes",
            )
        notes.append(f"reserve allows only {budget} block(s)")
        to_change = to_change[:budget]
    ratio = None
    steps = []
    for b in candidates if req.blocks is not None else to_change:
        if b.state == "online" and b.zone != MOVABLE:
            # Offlining kernel memory raises MOVABLE:KERNEL: keep it under the ceiling.
            ratio = ratio or _Ratio(snap, ratio_ceiling(req, snap))
            if not ratio.allows(b.node, 0, -pages):
                raise PlanRefused(
                    "ratio", f"offlining kernel-zone memory{b.id} would push MOVABLE:KERNEL above {ratio.ceiling}%"
                )
            ratio.add(b.node, 0, -pages)
        steps.append(Step(b.id, (Op.OFFLINE,)))
    if req.blocks is None and 0 < len(steps) < n:
        notes.append(f"only {len(steps)} of {n} requested blocks qualify")
    return Plan(req.action, steps, notes)


def _explicit_offline(req: Request, snap: Snapshot, zone: str) -> list[MemoryBlock]:
    """The request's own blocks, refused as a whole if an online one cannot go offline."""
    candidates = _explicit(req, snap)
    for b in candidates:
        if b.state == "online" and not b.offlinable:
            raise PlanRefused(
                "valid_zones_none",
                f"memory{b.id} has valid_zones none (spans zones, nodes or holes): it cannot be offlined",
            )
        if b.state == "online" and not offline_eligible(b, "any"):
            raise PlanRefused("request", f"memory{b.id}: state {b.state}, valid_zones {b.valid_zones}")
    if zone != "any" and req.zone is not None:
        for b in candidates:
            if b.state == "online" and not offline_eligible(b, zone):
                raise PlanRefused("request", f"memory{b.id} is in zone {b.zone}, not {zone}")
    return candidates


def _online_blocks(
    req: Request, snap: Snapshot, zone: str, quarantined: frozenset[int], notes: list[str]
) -> list[MemoryBlock]:
    """The online blocks of ``zone`` an offline request may take, highest address first."""
    candidates = [b for b in snap.blocks if offline_eligible(b, zone) and _in_scope(b, req) and b.id not in quarantined]
    candidates.sort(key=lambda b: b.id, reverse=True)  # highest address first, as chmem -d
    if not candidates:
        notes.append(
            f"no online block in zone {zone}"
            + (f" on node {req.node}" if req.node is not None else "")
            + " that can be offlined"
        )
    return candidates


def rebalance_needed(b: Balance, target: float, pages: int) -> int:
    """Blocks to move from ZONE_MOVABLE to a kernel zone until movable/kernel <= target."""
    n = 0
    m, k = b.movable_pages, b.kernel_pages
    while m > target * k and m > 0:
        m -= pages
        k += pages
        n += 1
    return n


def _plan_rebalance(
    req: Request, snap: Snapshot, bs: int, quarantined: frozenset[int], offlined_deliberately: frozenset[int]
) -> Plan:
    notes: list[str] = []
    pages = bs // PAGE_SIZE
    if _reserve_budget(req, snap, bs) < 1:
        raise PlanRefused(
            "reserve", "MemAvailable is within one block of the reserve: a block cannot even be offlined transiently"
        )
    if req.blocks is not None:
        candidates = _explicit(req, snap)
        for b in candidates:
            if not (b.state == "online" and b.zone == MOVABLE):
                raise PlanRefused(
                    "request", f"memory{b.id} is not an online ZONE_MOVABLE block (state {b.state}, zone {b.zone})"
                )
        return Plan(req.action, [Step(b.id, (Op.OFFLINE, Op.ONLINE_KERNEL)) for b in candidates], notes)
    if req.target_ratio is not None:
        ratio = _Ratio(snap, ratio_ceiling(req, snap))
        bal = ratio.nodes.get(req.node) if req.node is not None else ratio.total
        if bal is None:
            raise PlanRefused("empty_target", f"node {req.node} has no zones in /proc/zoneinfo")
        n = rebalance_needed(bal, req.target_ratio, pages)
        if n == 0:
            r = bal.ratio
            raise PlanRefused(
                "empty_target",
                f"MOVABLE:KERNEL is {r if r is None else round(r, 2)}, "
                f"already at or under the target {req.target_ratio}",
            )
        cap = req.max_blocks
        if req.count is not None or req.size is not None:
            cap = min(cap, wanted_blocks(req, bs))
        if n > cap:
            notes.append(f"{n} blocks needed to reach {req.target_ratio}:1, capped at {cap}")
            n = cap
    else:
        n = wanted_blocks(req, bs)
    candidates = [
        b
        for b in snap.blocks
        if b.state == "online" and b.zone == MOVABLE and _in_scope(b, req) and b.id not in quarantined
    ]
    candidates.sort(key=lambda b: b.id, reverse=True)
    if not candidates:
        notes.append("no online ZONE_MOVABLE block" + (f" on node {req.node}" if req.node is not None else ""))
    steps = [Step(b.id, (Op.OFFLINE, Op.ONLINE_KERNEL)) for b in candidates[:n]]
    return Plan(req.action, steps, notes)
