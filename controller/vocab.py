"""The controller's fixed vocabularies, and the one check of which zone goes with which action.

``StrEnum`` members are ``str``: they compare equal to, format as and
JSON-encode as their value, so journal records, metrics labels and YAML
values keep the exact spellings they always had.
"""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    REBALANCE = "rebalance"
    ONLINE_NEW = "online-new"


class Event(StrEnum):
    """The local kernel events a rule may run on instead of an alert (``rules[].event``)."""

    MEMORY_ADDED = "memory-added"


class Zone(StrEnum):
    """The ``zone`` of a rule or of ``act --zone``."""

    MOVABLE = "movable"
    KERNEL = "kernel"
    AUTO = "auto"
    ANY = "any"


ONLINE_ZONES = (Zone.MOVABLE, Zone.KERNEL, Zone.AUTO)
OFFLINE_ZONES = (Zone.MOVABLE, Zone.KERNEL, Zone.ANY)
DEFAULT_ZONE = {Action.ONLINE: Zone.AUTO, Action.ONLINE_NEW: Zone.AUTO, Action.OFFLINE: Zone.MOVABLE}


def check_action_zone(action: str, zone: str | None) -> tuple[Action, Zone | None]:
    """The one validation of an action and its zone (policy file, ``act``, planner).

    Returns them as enum members; raises ValueError naming what is allowed.
    """
    try:
        a = Action(action)
    except ValueError:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(Action)}") from None
    if zone is None:
        return a, None
    if a is Action.REBALANCE:
        raise ValueError("rebalance always moves ZONE_MOVABLE blocks to a kernel zone; no zone")
    allowed = OFFLINE_ZONES if a is Action.OFFLINE else ONLINE_ZONES
    if zone not in allowed:
        raise ValueError(f"for action {a} must be one of {', '.join(allowed)}, got {str(zone)!r}")
    return a, Zone(zone)


class Op(StrEnum):
    """The tokens written to ``memoryN/state``."""

    ONLINE = "online"
    ONLINE_MOVABLE = "online_movable"
    ONLINE_KERNEL = "online_kernel"
    OFFLINE = "offline"


class Status(StrEnum):
    """How one action ended (``ActionOutcome.status``)."""

    DONE = "done"
    PARTIAL = "partial"
    FAILED = "failed"
    REFUSED = "refused"
    DRY_RUN = "dry_run"
    DUPLICATE = "duplicate"


class Result(StrEnum):
    """One block change (``block_result``), retries included."""

    OK = "ok"
    ALREADY = "already"
    FAILED = "failed"


class AttemptResult(StrEnum):
    """One write attempt (``attempt_end``)."""

    OK = "ok"
    ALREADY = "already"
    FAILED = "failed"
    TIMEOUT = "timeout"
    MISMATCH = "mismatch"
    ERROR = "error"  # the controller failed around the write (e.g. waiting for the writer)


class Outcome(StrEnum):
    """What reconciliation found for an interrupted attempt."""

    COMPLETED = "completed"
    NOT_APPLIED = "not_applied"
    ALREADY = "already"
    IN_PROGRESS = "in_progress"
    BLOCK_GONE = "block_gone"
    UNKNOWN = "unknown"
