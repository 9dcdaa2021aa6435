"""How many blocks an action would change, from block counts in history.

The live controller plans on the node's sysfs (controller/policy.py).  History
holds memhp's recording rules, i.e. bytes per node, state and zone, not
blocks one by one, so this is the planner's arithmetic on those counts:

* offline: online ZONE_MOVABLE that can be offlined (``hot_unpluggable``) for
  zone movable, online kernel zones for zone kernel, both for any; never
  below the MemAvailable reserve (the same refusals as the planner);
* online, online-new: the offline blocks; zone movable is refused when
  MOVABLE:KERNEL would pass the ceiling (the kernel's auto_movable_ratio or
  guards.max_movable_ratio), auto falls back to a kernel zone as the planner does;
* rebalance: the planner's ``rebalance_needed`` on the accounted bytes, capped
  by the online ZONE_MOVABLE blocks and the reserve.

What it cannot see: blocks whose valid_zones forbid a zone, blocks the journal
says were offlined deliberately (online-new), and the ratio check of offlining
kernel-zone memory.
"""

from __future__ import annotations

from memhp.exporter.kernel.accounting import Balance
from memhp.exporter.kernel.zones import KERNEL_DEFAULT_RATIO, PAGE_SIZE

from ..policy import PlanRefused, Request, rebalance_needed, wanted_blocks
from .model import DEFAULT_BLOCK_SIZE, HostState, NodeState


def blocks_planned(req: Request, state: HostState | None) -> int:
    """The number of blocks the action would change; raises PlanRefused as the planner would."""
    if state is None:
        raise PlanRefused("state_unknown", "no memhp series for this host at that time")
    bs = int(state.block_size or DEFAULT_BLOCK_SIZE)
    node = _scope(req, state)
    if req.action == "offline":
        return _offline(req, state, node, bs)
    if req.action in ("online", "online-new"):
        return _online(req, state, node, bs)
    return _rebalance(req, state, node, bs)


def _scope(req: Request, state: HostState) -> NodeState:
    """The node the request names, or the host's nodes summed."""
    if req.node is not None:
        return state.nodes.get(req.node) or NodeState()
    total = NodeState(movable_accounted=0.0, kernel_accounted=0.0)
    for n in state.nodes.values():
        total.hot_unpluggable += n.hot_unpluggable
        total.offline += n.offline
        total.kernel_online += n.kernel_online
        if total.movable_accounted is not None and n.movable_accounted is not None:
            total.movable_accounted += n.movable_accounted
        else:
            total.movable_accounted = None
        if total.kernel_accounted is not None and n.kernel_accounted is not None:
            total.kernel_accounted += n.kernel_accounted
        else:
            total.kernel_accounted = None
    return total


def _reserve_blocks(req: Request, state: HostState, bs: int) -> int:
    if state.mem_available is None:
        raise PlanRefused("reserve", "MemAvailable unknown (memhp_memory_available_bytes): offlining refused")
    return max(0, int(state.mem_available - req.min_available) // bs)


def _offline(req: Request, state: HostState, node: NodeState, bs: int) -> int:
    n = wanted_blocks(req, bs)
    zone = req.zone or "movable"
    eligible = {"movable": node.hot_unpluggable, "kernel": node.kernel_online}.get(
        zone, node.hot_unpluggable + node.kernel_online
    )
    n = min(n, int(eligible // bs))
    if n == 0:
        raise PlanRefused("empty_target", f"no online block in zone {zone} that can be offlined")
    budget = _reserve_blocks(req, state, bs)
    if budget == 0:
        raise PlanRefused("reserve", f"offlining would take MemAvailable below the reserve of {req.min_available}")
    return min(n, budget)


def _ceiling(req: Request, state: HostState) -> float:
    if req.max_movable_ratio is not None:
        return float(req.max_movable_ratio)
    if state.auto_movable_ratio is not None:
        return state.auto_movable_ratio * 100
    return float(KERNEL_DEFAULT_RATIO)


def _online(req: Request, state: HostState, node: NodeState, bs: int) -> int:
    n = min(wanted_blocks(req, bs), int(node.offline // bs))
    if n == 0:
        raise PlanRefused("empty_target", "no offline block")
    if (req.zone or "auto") == "movable":
        if node.movable_accounted is None or node.kernel_accounted is None:
            raise PlanRefused("ratio", "MOVABLE:KERNEL unknown at that time")
        # the planner refuses as soon as one block does not fit
        if node.movable_accounted + bs > _ceiling(req, state) * node.kernel_accounted / 100:
            raise PlanRefused("ratio", f"onlining to ZONE_MOVABLE would exceed MOVABLE:KERNEL {_ceiling(req, state)}%")
    return n


def _rebalance(req: Request, state: HostState, node: NodeState, bs: int) -> int:
    if _reserve_blocks(req, state, bs) < 1:
        raise PlanRefused("reserve", "MemAvailable is within one block of the reserve")
    candidates = int(node.hot_unpluggable // bs)
    if req.target_ratio is None:
        n = wanted_blocks(req, bs)
    else:
        if node.movable_accounted is None or node.kernel_accounted is None:
            raise PlanRefused("empty_target", "MOVABLE:KERNEL unknown at that time")
        bal = Balance(int(node.movable_accounted // PAGE_SIZE), int(node.kernel_accounted // PAGE_SIZE))
        n = rebalance_needed(bal, req.target_ratio, bs // PAGE_SIZE)
        if n == 0:
            raise PlanRefused("empty_target", f"MOVABLE:KERNEL already at or under the target {req.target_ratio}")
        cap = req.max_blocks if req.count is None and req.size is None else min(req.max_blocks, wanted_blocks(req, bs))
        n = min(n, cap)
    n = min(n, candidates)
    if n == 0:
        raise PlanRefused("empty_target", "no online ZONE_MOVABLE block")
    return n
