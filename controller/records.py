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
class ActionStart(_Occurrence):
    TYPE = RecordType.ACTION_START
    action_id: str
    plan: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class AttemptStart(_Occurrence):
    TYPE = RecordType.ATTEMPT_START
    action_id: str
    block: int
    op: Op
    attempt: int
    state_before: str | None = None
    zone_before: str | None = None


@dataclass(frozen=True, kw_only=True)
class AttemptEnd(Record):
    TYPE = RecordType.ATTEMPT_END
    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE
    block: int
    op: Op
    attempt: int
    errno: int | None = None
    errno_name: str = ""
    result: AttemptResult
    retryable: bool = False
    state_after: str | None = None
    zone_after: str | None = None
    timed_out: bool = False
    killed: bool = False
    duration: float = 0.0
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class BlockResult(Record):
    TYPE = RecordType.BLOCK_RESULT
    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE
    block: int
    op: Op
    result: Result
    errno: int | None = None
    errno_name: str = ""
    attempts: int = 0
    state_before: str | None = None
    state_after: str | None = None
    zone_after: str | None = None
    duration: float = 0.0
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class ActionEnd(Record):
    TYPE = RecordType.ACTION_END
    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE
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
class Reconcile(Record):
    TYPE = RecordType.RECONCILE
    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE
    block: int
    op: Op
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
class ReconcileAction(Record):
    TYPE = RecordType.RECONCILE_ACTION
    action_id: str
    rule: str = ""
    action: Action = Action.ONLINE
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


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = {k: v for k, v in typing.get_type_hints(cls).items() if k != "TYPE"}
    return h


def _convert(tp: Any, v: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], v, where)
    if origin is tuple:
        if not isinstance(v, list):
            raise InvalidRecord(f"{where}: expected a list")
        item = typing.get_args(tp)[0]
        return tuple(_convert(item, x, f"{where}[]") for x in v)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(v)
        except ValueError:
            raise InvalidRecord(f"{where}: {v!r} is not one of {', '.join(m.value for m in tp)}") from None
    if dataclasses.is_dataclass(tp):
        if not isinstance(v, dict):
            raise InvalidRecord(f"{where}: expected an object")
        return _build(tp, v, where)  # type: ignore[arg-type]
    if tp is bool:
        if not isinstance(v, bool):
            raise InvalidRecord(f"{where}: expected true/false")
        return v
    if tp is int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidRecord(f"{where}: expected an integer")
        return v
    if tp is float:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise InvalidRecord(f"{where}: expected a finite number")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise InvalidRecord(f"{where}: expected a string")
        return v
    raise InvalidRecord(f"{where}: unsupported field type {tp!r}")  # pragma: no cover


def _build(cls: type, d: dict[str, Any], where: str) -> Any:
    kwargs = {}
    for name, tp in _hints(cls).items():
        if name in d:
            kwargs[name] = _convert(tp, d[name], f"{where}.{name}")
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is absent
        raise InvalidRecord(f"{where}: {e}") from None


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
    rec = _build(cls, d, str(t))
    if rec.ts < 0:
        raise InvalidRecord(f"{t}.ts: negative")
    return rec
