"""The journal's record kinds: one frozen dataclass per ``type``.

Writers build these instead of dicts; :func:`parse_record` turns one decoded
JSON line back into its dataclass, checking every field's type, so a line
that is valid JSON but not a valid record (``"ts": "yesterday"``, an
``action_id`` that is a list) is rejected instead of reaching the guards.
Unknown keys are ignored (a newer writer may add fields); absent keys take
their defaults.  The JSON on disk is the same as before the types existed.

The ``state_*`` kinds are written only by rotation (:mod:`controller.journal`):
they carry into the new file what the guards must remember across it
(idempotency, cooldowns, the hourly cap, failures, quarantine).  Applying one
twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from .vocab import Action, AttemptResult, Op, Outcome, Result, Status

# Bounds on what one record may hold (a payload's fields are bounded before they get here).
MAX_ID = 128  # fingerprint, starts_at, action_id, rule, guard, source
MAX_TEXT = 1024  # detail, stopped, notes


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


class InvalidRecord(ValueError):
    pass


@dataclass(frozen=True)
class PlanStep:
    block: int
    ops: tuple[Op, ...]


@dataclass(frozen=True, kw_only=True)
class Record:
    TYPE: ClassVar[RecordType]
    ts: float = 0.0  # Unix time; filled in by Journal.append
    pid: int = 0

    @property
    def type(self) -> RecordType:
        return self.TYPE

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ts": self.ts, "pid": self.pid, "type": str(self.TYPE)}
        for f in dataclasses.fields(self):
            if f.name not in ("ts", "pid"):
                out[f.name] = _plain(getattr(self, f.name))
        return out


@dataclass(frozen=True, kw_only=True)
class _Occurrence(Record):
    """Fields naming the alert occurrence (empty for ``act``)."""

    rule: str = ""
    action: Action = Action.ONLINE
    fingerprint: str = ""
    starts_at: str = ""  # the alert's startsAt, as the source normalised it
    resolved: bool = False  # the occurrence is the resolution of that episode
    source: str = ""

    @property
    def occurrence(self) -> tuple[str, str, bool]:
        return (self.fingerprint, self.starts_at, self.resolved)


@dataclass(frozen=True, kw_only=True)
class _OfAction(Record):
    """Fields naming the action a record belongs to."""

    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE


@dataclass(frozen=True, kw_only=True)
class _OfChange(_OfAction):
    """... and the block change (one ``op`` on one ``block``)."""

    block: int
    op: Op


@dataclass(frozen=True, kw_only=True)
class _Outcome(Record):
    """How a write attempt or a whole block change ended."""

    errno: int | None = None
    errno_name: str = ""
    state_after: str | None = None
    zone_after: str | None = None
    duration: float = 0.0
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ActionStart(_Occurrence, _OfAction):
    TYPE = RecordType.ACTION_START
    plan: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AttemptStart(_Occurrence, _OfChange):
    TYPE = RecordType.ATTEMPT_START
    attempt: int
    state_before: str | None = None
    zone_before: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttemptEnd(_Outcome, _OfChange):
    TYPE = RecordType.ATTEMPT_END
    attempt: int
    result: AttemptResult
    retryable: bool = False
    timed_out: bool = False
    killed: bool = False


@dataclass(frozen=True, kw_only=True)
class BlockResult(_Outcome, _OfChange):
    TYPE = RecordType.BLOCK_RESULT
    result: Result
    attempts: int = 0
    state_before: str | None = None


@dataclass(frozen=True, kw_only=True)
class ActionEnd(_OfAction):
    TYPE = RecordType.ACTION_END
    result: Status
    changed: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    stopped: str = ""
    duration: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Refusal(_Occurrence):
    TYPE = RecordType.REFUSAL
    guard: str
    detail: str = ""
    plan: tuple[PlanStep, ...] = ()
    # Refusals of the same rule and guard not journalled since the previous one
    # (counted in memhp_controller_refusals_unjournalled_total).
    suppressed: int = 0


@dataclass(frozen=True, kw_only=True)
class DryRun(_Occurrence):
    TYPE = RecordType.DRY_RUN
    plan: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Quarantine(Record):
    TYPE = RecordType.QUARANTINE
    block: int
    until: float
    rule: str = ""


@dataclass(frozen=True, kw_only=True)
class Reconcile(_OfChange):
    TYPE = RecordType.RECONCILE
    attempt: int
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False
    state_before: str | None = None
    state_now: str | None = None
    zone_now: str | None = None
    outcome: Outcome
    interrupted_at: float | None = None


@dataclass(frozen=True, kw_only=True)
class ReconcileAction(_OfAction):
    TYPE = RecordType.RECONCILE_ACTION
    result: str = "interrupted"
    fingerprint: str = ""
    starts_at: str = ""
    resolved: bool = False


@dataclass(frozen=True, kw_only=True)
class Rotated(Record):
    """First record of a journal file made by rotation; the ``state_*`` records follow."""

    TYPE = RecordType.ROTATED
    previous: str  # where the rotated-out records are now
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class StateActed(Record):
    """An occurrence that acted (its ``action_start`` was at ``at``)."""

    TYPE = RecordType.STATE_ACTED
    fingerprint: str
    starts_at: str = ""
    resolved: bool = False
    at: float


@dataclass(frozen=True, kw_only=True)
class StateRule(Record):
    """A rule's last action (cooldown)."""

    TYPE = RecordType.STATE_RULE
    rule: str
    at: float


@dataclass(frozen=True, kw_only=True)
class StateChange(Record):
    """A successful block change within the last hour (hourly cap)."""

    TYPE = RecordType.STATE_CHANGE
    at: float
    action_id: str = ""
    block: int


@dataclass(frozen=True, kw_only=True)
class StateBlock(Record):
    """What the guards remember of one block."""

    TYPE = RecordType.STATE_BLOCK
    block: int
    failures: int = 0
    quarantined_until: float | None = None
    offlined: bool = False


KINDS: dict[str, type[Record]] = {
    str(c.TYPE): c
    for c in (
        ActionStart,
        AttemptStart,
        AttemptEnd,
        BlockResult,
        ActionEnd,
        Refusal,
        DryRun,
        Quarantine,
        Reconcile,
        ReconcileAction,
        Rotated,
        StateActed,
        StateRule,
        StateChange,
        StateBlock,
    )
}


def clip(s: str, n: int = MAX_TEXT) -> str:
    """``s`` cut to ``n`` characters (for free text only, never for identities)."""
    return s if len(s) <= n else s[: n - 1] + "…"


def plan_steps(described: list[dict[str, Any]]) -> tuple[PlanStep, ...]:
    return tuple(PlanStep(int(s["block"]), tuple(Op(o) for o in s["ops"])) for s in described)


# --- (de)serialisation -----------------------------------------------------------------------


def _plain(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return v.value
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


Converter = Callable[[Any], Any]
_FIELDS: dict[type, list[tuple[str, Converter]]] = {}


def _fields_of(cls: type) -> list[tuple[str, Converter]]:
    """(name, converter) per field, built once per class: reading a journal is a hot loop."""
    f = _FIELDS.get(cls)
    if f is None:
        hints = typing.get_type_hints(cls)
        f = _FIELDS[cls] = [(name, _compile(tp)) for name, tp in hints.items() if name != "TYPE"]
    return f


def _str(v: Any) -> str:
    if type(v) is not str:
        raise InvalidRecord("expected a string")
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise InvalidRecord("expected an integer")
    return v


def _float(v: Any) -> float:
    if type(v) is float:
        if not math.isfinite(v):
            raise InvalidRecord("expected a finite number")
        return v
    if type(v) is int:
        return float(v)
    raise InvalidRecord("expected a finite number")


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise InvalidRecord("expected true/false")
    return v


def _compile(tp: Any) -> Converter:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        conv = _compile(inner[0])

        def optional(v: Any) -> Any:
            return None if v is None else conv(v)

        return optional
    if origin is tuple:
        item = _compile(typing.get_args(tp)[0])

        def seq(v: Any) -> tuple:
            if type(v) is not list:
                raise InvalidRecord("expected a list")
            return tuple(item(x) for x in v)

        return seq
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}
        names = ", ".join(members)

        def member(v: Any) -> Any:
            try:
                return members[v]
            except (KeyError, TypeError):
                raise InvalidRecord(f"{str(v)[:40]!r} is not one of {names}") from None

        return member
    if dataclasses.is_dataclass(tp):

        def nested(v: Any) -> Any:
            if type(v) is not dict:
                raise InvalidRecord("expected an object")
            return _build(tp, v)  # type: ignore[arg-type]

        return nested
    simple = {bool: _bool, int: _int, float: _float, str: _str}.get(tp)
    if simple is None:  # pragma: no cover - a field type this module does not know
        raise TypeError(f"unsupported record field type {tp!r}")
    return simple


def _build(cls: type, d: dict[str, Any]) -> Any:
    kwargs = {}
    for name, conv in _fields_of(cls):
        if name in d:
            try:
                kwargs[name] = conv(d[name])
            except InvalidRecord as e:
                raise InvalidRecord(f"{name}: {e}") from None
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is absent
        raise InvalidRecord(str(e)) from None


def parse_record(d: Any) -> Record:
    """The typed record of one decoded JSON line; raises :class:`InvalidRecord`."""
    if not isinstance(d, dict):
        raise InvalidRecord("not a JSON object")
    t = d.get("type")
    cls = KINDS.get(t) if isinstance(t, str) else None
    if cls is None:
        raise InvalidRecord(f"unknown record type {t!r}")
    if isinstance(d.get("starts_at"), str) and "resolved" not in d and d["starts_at"].endswith("/resolved"):
        # Journals written before `resolved` was a field marked the occurrence in starts_at.
        d = {**d, "starts_at": d["starts_at"][: -len("/resolved")], "resolved": True}
    try:
        rec = _build(cls, d)
    except InvalidRecord as e:
        raise InvalidRecord(f"{t}.{e}") from None
    if rec.ts < 0:
        raise InvalidRecord(f"{t}.ts: negative")
    return rec
