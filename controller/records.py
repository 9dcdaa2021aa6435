"""The journal's record kinds: one frozen msgspec Struct per ``type`` (the tagged union :data:`AnyRecord`).

Writers build these instead of dicts; :func:`parse_line` and :func:`parse_record`
turn one JSON line (or one decoded object) back into its Struct, msgspec checking
every field's type, so a line that is valid JSON but not a valid record
(``"ts": "yesterday"``, an ``action_id`` that is a list) is rejected instead of
reaching the guards.  Unknown keys are ignored (a newer writer may add fields);
absent keys take their defaults.  The JSON on disk is the same as before the
types existed, key for key and in the same order.

The ``state_*`` kinds are written only by rotation (:mod:`controller.journal`):
they carry into the new file what the guards must remember across it
(idempotency, cooldowns, the hourly cap, failures, quarantine).  Applying one
twice changes nothing.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import Annotated, Any, ClassVar

import msgspec
from msgspec import Meta, Struct

from .vocab import Action, AttemptResult, Op, Outcome, Result, Status

# Bounds on what one record may hold (a payload's fields are bounded before they get here).
MAX_ID = 128  # fingerprint, starts_at, action_id, rule, guard, source
MAX_TEXT = 1024  # detail, stopped, notes

# Every number in a record is finite: .nan passes every comparison as false, and an `until`
# of inf would quarantine a block for ever.
Finite = Annotated[float, Meta(ge=-sys.float_info.max, le=sys.float_info.max)]
Timestamp = Annotated[float, Meta(ge=0, le=sys.float_info.max)]  # Unix time


class RecordType(StrEnum):
    ACTION_START = "action_start"
    ATTEMPT_START = "attempt_start"
    ATTEMPT_END = "attempt_end"
    BLOCK_RESULT = "block_result"
    ACTION_END = "action_end"
    REFUSAL = "refusal"
    DRY_RUN = "dry_run"
    QUARANTINE = "quarantine"
    RECONCILE = "reconcile"
    RECONCILE_ACTION = "reconcile_action"
    ROTATED = "rotated"
    STATE_ACTED = "state_acted"
    STATE_RULE = "state_rule"
    STATE_CHANGE = "state_change"
    STATE_BLOCK = "state_block"
    BUDGET = "budget"


class InvalidRecord(ValueError):
    pass


class PlanStep(Struct, frozen=True):
    block: int
    ops: tuple[Op, ...]


class Record(Struct, frozen=True, kw_only=True, tag_field="type"):
    TYPE: ClassVar[RecordType]
    ts: Timestamp = 0.0  # filled in by Journal.append
    pid: int = 0

    @property
    def type(self) -> RecordType:
        return self.TYPE

    def to_json(self) -> dict[str, Any]:
        """Plain data in the key order journals have always had: ts, pid, type, then the fields."""
        d = _lists(msgspec.to_builtins(self))
        return {"ts": d.pop("ts"), "pid": d.pop("pid"), "type": d.pop("type"), **d}


def _lists(v: Any) -> Any:
    """Tuples as lists, as json.loads gives them back (to_builtins keeps tuples)."""
    if isinstance(v, (tuple, list)):
        return [_lists(x) for x in v]
    if isinstance(v, dict):
        return {k: _lists(x) for k, x in v.items()}
    return v


class _OccurrenceOf:
    """The occurrence an action, attempt, refusal or dry run answers (empty for ``act``)."""

    __slots__ = ()
    fingerprint: str
    starts_at: str
    resolved: bool

    @property
    def occurrence(self) -> tuple[str, str, bool]:
        return (self.fingerprint, self.starts_at, self.resolved)


# Structs have one line of bases with fields: the occurrence fields are written out in the
# three kinds that carry them, in the order journals have always had.


class _Occurrence(Record, _OccurrenceOf, frozen=True, kw_only=True):
    rule: str = ""
    action: Action = Action.ONLINE
    fingerprint: str = ""
    starts_at: str = ""  # the alert's startsAt, as the source normalised it
    resolved: bool = False  # the occurrence is the resolution of that episode
    source: str = ""


class _OfAction(Record, frozen=True, kw_only=True):
    """Fields naming the action a record belongs to."""

    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE


class _OfChange(_OfAction, frozen=True, kw_only=True):
    """... and the block change (one ``op`` on one ``block``)."""

    block: int
    op: Op


class _Outcome(_OfChange, frozen=True, kw_only=True):
    """How a write attempt or a whole block change ended."""

    errno: int | None = None
    errno_name: str = ""
    state_after: str | None = None
    zone_after: str | None = None
    duration: Finite = 0.0
    detail: str = ""


class ActionStart(_OfAction, _OccurrenceOf, frozen=True, kw_only=True, tag=RecordType.ACTION_START.value):
    TYPE = RecordType.ACTION_START
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False
    source: str = ""
    plan: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()


class AttemptStart(_OfChange, _OccurrenceOf, frozen=True, kw_only=True, tag=RecordType.ATTEMPT_START.value):
    TYPE = RecordType.ATTEMPT_START
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False
    source: str = ""
    attempt: int
    state_before: str | None = None
    zone_before: str | None = None


class AttemptEnd(_Outcome, frozen=True, kw_only=True, tag=RecordType.ATTEMPT_END.value):
    TYPE = RecordType.ATTEMPT_END
    attempt: int
    result: AttemptResult
    retryable: bool = False
    timed_out: bool = False
    killed: bool = False


class BlockResult(_Outcome, frozen=True, kw_only=True, tag=RecordType.BLOCK_RESULT.value):
    TYPE = RecordType.BLOCK_RESULT
    result: Result
    attempts: int = 0
    state_before: str | None = None


class ActionEnd(_OfAction, frozen=True, kw_only=True, tag=RecordType.ACTION_END.value):
    TYPE = RecordType.ACTION_END
    result: Status
    changed: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    stopped: str = ""
    duration: Finite = 0.0


class Refusal(_Occurrence, frozen=True, kw_only=True, tag=RecordType.REFUSAL.value):
    TYPE = RecordType.REFUSAL
    guard: str
    detail: str = ""
    plan: tuple[PlanStep, ...] = ()
    # Refusals of the same rule and guard not journalled since the previous one
    # (counted in memhp_controller_refusals_unjournalled_total).
    suppressed: int = 0


class DryRun(_Occurrence, frozen=True, kw_only=True, tag=RecordType.DRY_RUN.value):
    TYPE = RecordType.DRY_RUN
    plan: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()


class Quarantine(Record, frozen=True, kw_only=True, tag=RecordType.QUARANTINE.value):
    TYPE = RecordType.QUARANTINE
    block: int
    until: Finite
    rule: str = ""


class Reconcile(_OfChange, frozen=True, kw_only=True, tag=RecordType.RECONCILE.value):
    TYPE = RecordType.RECONCILE
    attempt: int
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False
    state_before: str | None = None
    state_now: str | None = None
    zone_now: str | None = None
    outcome: Outcome
    interrupted_at: Finite | None = None


class ReconcileAction(_OfAction, frozen=True, kw_only=True, tag=RecordType.RECONCILE_ACTION.value):
    TYPE = RecordType.RECONCILE_ACTION
    result: str = "interrupted"
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False


class Rotated(Record, frozen=True, kw_only=True, tag=RecordType.ROTATED.value):
    """First record of a journal file made by rotation; the ``state_*`` records follow."""

    TYPE = RecordType.ROTATED
    previous: str  # where the rotated-out records are now
    reason: str = ""


class StateActed(Record, frozen=True, kw_only=True, tag=RecordType.STATE_ACTED.value):
    """An occurrence that acted (its ``action_start`` was at ``at``)."""

    TYPE = RecordType.STATE_ACTED
    fingerprint: str
    starts_at: str = ""
    resolved: bool = False
    at: Finite


class StateRule(Record, frozen=True, kw_only=True, tag=RecordType.STATE_RULE.value):
    """A rule's last action (cooldown)."""

    TYPE = RecordType.STATE_RULE
    rule: str
    at: Finite


class StateChange(Record, frozen=True, kw_only=True, tag=RecordType.STATE_CHANGE.value):
    """A successful block change within the last hour (hourly cap)."""

    TYPE = RecordType.STATE_CHANGE
    at: Finite
    action_id: str = ""
    block: int


class StateBlock(Record, frozen=True, kw_only=True, tag=RecordType.STATE_BLOCK.value):
    """What the guards remember of one block."""

    TYPE = RecordType.STATE_BLOCK
    block: int
    failures: int = 0
    quarantined_until: Finite | None = None
    offlined: bool = False


class Budget(Record, frozen=True, kw_only=True, tag=RecordType.BUDGET.value):
    """The fleet budget's slots of one action: ``acquired`` (after etcd granted them, before its
    action_start), ``release`` (after its action_end, before they are given back) and, if giving
    them back failed, ``release_failed`` (the lease then frees them within its TTL)."""

    TYPE = RecordType.BUDGET
    event: str
    action_id: str = ""
    rule: str = ""
    slots: tuple[str, ...] = ()
    lease: str = ""
    waited: Finite = 0.0
    detail: str = ""


AnyRecord = (
    Budget
    | ActionStart
    | AttemptStart
    | AttemptEnd
    | BlockResult
    | ActionEnd
    | Refusal
    | DryRun
    | Quarantine
    | Reconcile
    | ReconcileAction
    | Rotated
    | StateActed
    | StateRule
    | StateChange
    | StateBlock
)
_DECODER = msgspec.json.Decoder(AnyRecord)


def clip(s: str, n: int = MAX_TEXT) -> str:
    """``s`` cut to ``n`` characters (for free text only, never for identities)."""
    return s if len(s) <= n else s[: n - 1] + "…"


def plan_steps(described: list[dict[str, Any]]) -> tuple[PlanStep, ...]:
    return tuple(PlanStep(int(s["block"]), tuple(Op(o) for o in s["ops"])) for s in described)


# --- reading ---------------------------------------------------------------------------------

_LEGACY_RESOLVED = "/resolved"  # journals written before `resolved` was a field marked it in starts_at


def parse_line(line: bytes) -> Record:
    """The typed record of one journal line; raises :class:`InvalidRecord`."""
    try:
        rec: Record = _DECODER.decode(line)
    except msgspec.ValidationError as e:
        raise InvalidRecord(str(e)) from None
    except msgspec.DecodeError:
        # JSON that msgspec refuses and Python's json reads, as journals always have: lone
        # surrogate escapes (alert text is JSON from a sender).  The rare slow path.
        return parse_record(json.loads(line))
    if getattr(rec, "starts_at", "").endswith(_LEGACY_RESOLVED) and not rec.resolved:  # type: ignore[attr-defined]
        return _legacy(rec, msgspec.json.decode(line))
    return rec


def parse_record(d: Any) -> Record:
    """The typed record of one decoded JSON object; raises :class:`InvalidRecord`."""
    try:
        rec: Record = msgspec.convert(d, AnyRecord, strict=True)
    except msgspec.ValidationError as e:
        raise InvalidRecord(str(e)) from None
    if getattr(rec, "starts_at", "").endswith(_LEGACY_RESOLVED) and not rec.resolved:  # type: ignore[attr-defined]
        return _legacy(rec, d)
    return rec


def _legacy(rec: Record, d: dict[str, Any]) -> Record:
    if "resolved" in d:
        return rec
    starts_at: str = rec.starts_at  # type: ignore[attr-defined]
    return msgspec.structs.replace(rec, starts_at=starts_at[: -len(_LEGACY_RESOLVED)], resolved=True)
