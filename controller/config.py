"""The controller's policy file: YAML, validated strictly, with line numbers.

The file is composed into PyYAML's node tree (never constructed blindly) and
validated while walking it against the dataclasses below, so every error
names ``file:line:column`` and the dotted key.  Unknown keys, duplicate keys,
wrong types, out-of-range values and contradictory settings are all errors;
nothing is silently defaulted except keys that are absent.

Each dataclass is one section.  A new section (e.g. for the alert sources) is
one dataclass plus one field on :class:`Config`; the walker needs no change.
Field metadata: ``check`` (callable raising ValueError), ``parse`` (turns the
plain YAML value into the field's value, raising ValueError), ``doc``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import re2
import yaml

from memhp.units import parse_duration, parse_size

from .vocab import Action, Zone, check_action_zone

MAX_FILE = 1 << 20  # a policy file larger than this is refused, never truncated
MAX_DEPTH = 32  # nesting of the YAML document (the schema needs 5)
DAY = 86400.0


class ConfigError(ValueError):
    """One or more problems in the policy file, each with its position."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --- field helpers ----------------------------------------------------------------------------


def _positive(v: float) -> None:
    if v <= 0:
        raise ValueError("must be greater than 0")


def _non_negative(v: float) -> None:
    if v < 0:
        raise ValueError("must not be negative")


def _percent(v: int) -> None:
    if not 1 <= v <= 6300:
        raise ValueError("must be a percentage between 1 and 6300 (63:1 is impossible, see memory-hotplug.rst)")


def _bounded(check, upper: float):
    """``check`` plus a finite upper bound (a duration of .inf or 30d must not reach a timer)."""

    def f(v: float) -> None:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        check(v)
        if v > upper:
            raise ValueError(f"must be at most {_human(upper)}")

    return f


def _human(seconds: float) -> str:
    for unit, n in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds / n:.0f}{unit}"
    return f"{seconds:g}s"


def _duration(default: float | None, doc: str = "", check=_non_negative, upper: float = DAY) -> Any:
    return field(
        default=default,
        metadata={
            "parse": parse_duration,
            "check": _bounded(check, upper),
            "doc": doc,
            "yaml": (int, float, str),
            "max": upper,
        },
    )


def _size(default: int | None, doc: str = "", check=None) -> Any:
    meta: dict[str, Any] = {"parse": parse_size, "doc": doc, "yaml": (int, str)}
    if check is not None:
        meta["check"] = check
    return field(default=default, metadata=meta)


def _range(v: float, lo: float, hi: float) -> None:
    if not lo <= v <= hi:
        raise ValueError(f"must be between {lo} and {hi}")


def _int(default: int | None, check=_positive, doc: str = "") -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


# --- matchers ---------------------------------------------------------------------------------

_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*\Z", re.DOTALL)

# RE2, as Alertmanager: matching takes time linear in the label, whatever the pattern.  Python's
# backtracking re spent minutes on `(.*\.)*prod\.example\.com` against 81 sender-chosen bytes,
# with the controller's worker stuck inside one C call.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is a config error with its position, not stderr noise
_RE2_OPTIONS.dot_nl = True  # `.` matches a newline, as it always did here (re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """One Alertmanager-style label matcher: ``name="v"``, ``!=``, ``=~``, ``!~``.

    Regexes are anchored at both ends, as Alertmanager anchors them; a label
    the alert does not carry matches as the empty string.
    """

    label: str
    op: str
    value: str
    regex: Any = dataclasses.field(default=None, compare=False, repr=False)  # an RE2 pattern

    def matches(self, labels: typing.Mapping[str, str]) -> bool:
        v = labels.get(self.label, "")
        if not isinstance(v, str):
            return False
        if self.op == "=":
            return v == self.value
        if self.op == "!=":
            return v != self.value
        # bytes: a lone surrogate (valid JSON) cannot be encoded strictly, and must not raise here
        hit = self.regex.fullmatch(v.encode("utf-8", "surrogatepass")) is not None
        return hit if self.op == "=~" else not hit

    def __str__(self) -> str:
        return f'{self.label}{self.op}"{self.value}"'


def parse_matcher(text: str) -> Matcher:
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f'not a matcher: {text!r} (use label="value", label!="v", label=~"re", label!~"re")')
    label, op, raw = m.groups()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            value = yaml.safe_load(raw)  # a YAML double-quoted scalar: Go-like escapes
        except yaml.YAMLError as e:
            raise ValueError(f"bad quoted value in matcher {text!r}: {e}") from None
        if not isinstance(value, str):
            raise ValueError(f"bad quoted value in matcher {text!r}")
    elif '"' in raw:
        raise ValueError(f"unbalanced quotes in matcher {text!r}")
    else:
        value = raw
    regex = _compile_regex(text, value) if op in ("=~", "!~") else None
    return Matcher(label, op, value, regex)


def _compile_regex(text: str, value: str) -> Any:
    try:
        return re2.compile(f"(?:{value})", _RE2_OPTIONS)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)
        raise ValueError(
            f"bad regex in matcher {text!r}: {why} (RE2 syntax, as Alertmanager: no backreferences, "
            "no lookahead or lookbehind, repetition counts at most 1000)"
        ) from None


# --- sections ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryConfig:
    """How one block's state change is attempted (the actuator's budget)."""

    attempts: int = _int(3, doc="Maximum write attempts per block change (1 = no retry).")
    attempt_timeout: float = _duration(
        30.0, "Per-attempt deadline; then the writer child gets SIGTERM (at most 1h).", check=_positive, upper=3600.0
    )
    kill_grace: float = _duration(
        2.0, "Time between SIGTERM and SIGKILL of a writer child (at most 5m).", check=_positive, upper=300.0
    )
    total_timeout: float = _duration(
        120.0,
        "Bound on one block change: no attempt starts unless it can end (worst case attempt_timeout + "
        "2 x kill_grace) within this time from the first (at most 1d).",
        check=_positive,
    )
    backoff_initial: float = _duration(1.0, "First backoff; doubles per retry (at most 1h).", upper=3600.0)
    backoff_max: float = _duration(30.0, "Longest backoff between attempts (at most 1h).", upper=3600.0)
    backoff_jitter: float = _duration(1.0, "Random extra backoff, uniform in [0, jitter] (at most 1h).", upper=3600.0)


@dataclass(frozen=True)
class QuarantineConfig:
    after_failures: int = _int(3, doc="Consecutive failed changes of one block before it is quarantined.")
    duration: float = _duration(
        3600.0, "How long a quarantined block is left alone (at most 30d).", check=_positive, upper=30 * DAY
    )


@dataclass(frozen=True)
class GuardsConfig:
    dry_run: bool = field(default=False, metadata={"doc": "Plan and journal, never write sysfs."})
    pause_file: str | None = field(
        default="/run/memhp-controller/pause", metadata={"doc": "While this file exists, nothing is changed."}
    )
    max_blocks_per_hour: int = _int(16, doc="Blocks changed in any sliding hour, all rules and `act` together.")
    max_blocks_per_action: int = _int(8, doc="Blocks one action may change (a rule's max_blocks may lower it).")
    cooldown: float = _duration(600.0, "Default time between two actions of the same rule (at most 7d).", upper=7 * DAY)
    min_available: int = _size(512 << 20, "Offlining never plans below this much MemAvailable.")
    max_movable_ratio: int | None = _int(
        None,
        check=_percent,
        doc="Ceiling of MOVABLE:KERNEL in percent for any online to ZONE_MOVABLE; default: the kernel's "
        "auto_movable_ratio (301 if unreadable).",
    )
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)


@dataclass(frozen=True)
class ControllerConfig:
    journal: str = field(
        default="/var/lib/memhp-controller/journal.jsonl",
        metadata={"doc": "Append-only JSON Lines journal (also the idempotency store)."},
    )
    queue_size: int = _int(
        256,
        check=lambda v: _range(v, 1, 100_000),
        doc="Alerts waiting for the worker (1-100000); beyond it submit() raises SinkFull (429).",
    )
    action_timeout: float = _duration(
        900.0, "No new block change of one action starts after this long (at most 1d).", check=_positive
    )
    journal_max_size: int = _size(
        16 << 20,
        "Rotate the journal when it is larger than this (64K-1G); start-up reads at most about this much.",
        check=lambda v: _range(v, 64 << 10, 1 << 30),
    )
    journal_max_age: float = _duration(
        7 * DAY,
        "Rotate the journal when its first record is older than this (1m-365d).",
        check=lambda v: _range(v, 60, 365 * DAY),
        upper=365 * DAY,
    )
    journal_keep: int = _int(
        3, check=lambda v: _range(v, 0, 100), doc="Rotated journals kept as <journal>.1 .. .N (0-100; 0 keeps none)."
    )
    idempotency_retention: float = _duration(
        30 * DAY,
        "How long an acted alert occurrence is remembered across rotations (at most 365d; also at most "
        "50000 occurrences).",
        check=_positive,
        upper=365 * DAY,
    )


@dataclass(frozen=True)
class Rule:
    name: str = field(
        metadata={
            "check": lambda v: _name_check(v),  # noqa: PLW0108 (defined below)
            "doc": "Unique rule name (journal, metrics).",
        }
    )
    alertname: str = field(
        metadata={
            "check": lambda v: _nonempty(v),  # noqa: PLW0108 (defined below)
            "doc": "The alert's `alertname`, exactly.",
        }
    )
    action: Action = field(metadata={"doc": "What to do: online, offline, rebalance or online-new."})
    matchers: tuple[Matcher, ...] = field(
        default=(),
        metadata={
            "parse": lambda seq: tuple(parse_matcher(s) for s in seq),
            "yaml": (list,),
            "doc": 'Further label matchers, Alertmanager syntax: `severity="critical"`, `node=~"0|1"`.',
        },
    )
    count: int | None = _int(None, doc="Number of blocks (online, offline, online-new, rebalance).")
    size: int | None = _size(None, "Amount of memory, a multiple of the block size (instead of count).")
    zone: Zone | None = field(
        default=None,
        metadata={
            "doc": "online/online-new: movable | kernel | auto (default auto). "
            "offline: movable (default) | kernel | any."
        },
    )
    target_ratio: float | None = field(
        default=None, metadata={"check": _positive, "doc": "rebalance: MOVABLE:KERNEL to reach, e.g. 3 for 3:1."}
    )
    max_blocks: int | None = _int(None, doc="Cap for this rule; at most guards.max_blocks_per_action.")
    node_label: str | None = field(
        default=None,
        metadata={"doc": "Alert label naming the NUMA node to act on (e.g. `node`); an alert without it does not act."},
    )
    cooldown: float | None = _duration(None, "Overrides guards.cooldown for this rule.")
    min_available: int | None = _size(None, "Overrides guards.min_available for this rule.")
    on_resolved: bool = field(default=False, metadata={"doc": "Act when the alert resolves instead of fires."})

    def matches(self, alert_name: str, labels: typing.Mapping[str, str]) -> bool:
        return alert_name == self.alertname and all(m.matches(labels) for m in self.matchers)


def _nonempty(v: str) -> None:
    if not v.strip():
        raise ValueError("must not be empty")


def _name_check(v: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", v):
        raise ValueError("must be 1-64 characters of letters, digits, _ . : -")


@dataclass(frozen=True)
class Config:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    rules: tuple[Rule, ...] = ()

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def to_dict(self) -> dict:
        """Plain data for logging the effective configuration."""

        def conv(v):
            if isinstance(v, Matcher):
                return str(v)
            if dataclasses.is_dataclass(v):
                return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
            if isinstance(v, (list, tuple)):
                return [conv(x) for x in v]
            return v

        return conv(self)


# --- the walker -------------------------------------------------------------------------------

_TAG = {
    "tag:yaml.org,2002:int": int,
    "tag:yaml.org,2002:float": float,
    "tag:yaml.org,2002:bool": bool,
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:null": type(None),
    "tag:yaml.org,2002:seq": list,
    "tag:yaml.org,2002:map": dict,
}
_TYPE_NAME = {
    int: "an integer",
    float: "a number",
    bool: "a boolean (true/false)",
    str: "a string",
    type(None): "null",
    list: "a list",
    dict: "a mapping",
    object: "an unsupported YAML type",
}
# Tags the policy file may carry (explicitly or resolved): the plain YAML types only.
_ALLOWED_TAGS = frozenset(_TAG) | {"!"}


class _Walker:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.problems: list[str] = []
        self._constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node, key: str, msg: str) -> None:
        m = node.start_mark
        where = f"{self.filename}:{m.line + 1}:{m.column + 1}"
        self.problems.append(f"{where}: {key or '(top level)'}: {msg}")

    def kind(self, node: yaml.Node) -> type:
        if isinstance(node, yaml.MappingNode):
            return dict
        if isinstance(node, yaml.SequenceNode):
            return list
        # Any other tag (timestamp, binary, set, ...) was refused by _prescan; never constructed.
        return _TAG.get(node.tag, object)

    def plain(self, node: yaml.Node) -> Any:
        return self._constructor.construct_object(node, deep=True)

    def dataclass(self, cls: Any, node: yaml.Node | None, key: str) -> Any:
        if node is None:
            return cls()
        if not isinstance(node, yaml.MappingNode):
            self.error(node, key, f"must be a mapping, got {_TYPE_NAME[self.kind(node)]}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        seen: dict[str, yaml.Node] = {}
        ok = True
        for knode, vnode in node.value:
            kname = knode.value if isinstance(knode, yaml.ScalarNode) else None
            sub = f"{key}.{kname}" if key else str(kname)
            if not isinstance(kname, str) or self.kind(knode) is not str:
                self.error(knode, key, f"keys must be strings, got {knode.value!r}")
                ok = False
                continue
            if kname in seen:
                self.error(knode, sub, f"duplicate key (first at line {seen[kname].start_mark.line + 1})")
                ok = False
                continue
            seen[kname] = knode
            f = fields.get(kname)
            if f is None:
                close = [n for n in fields if n.replace("_", "") == kname.replace("_", "").replace("-", "")]
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
                self.error(knode, sub, f"unknown key{hint}")
                ok = False
                continue
            before = len(self.problems)
            v = self.value(hints[kname], f, vnode, sub)
            if len(self.problems) > before:
                ok = False
                continue
            values[kname] = v
        for name, f in fields.items():
            if (
                name not in values
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
                and name not in seen
            ):
                self.error(node, f"{key}.{name}" if key else name, "required key is missing")
                ok = False
        if not ok:
            return None
        return cls(**values)

    def value(self, tp: Any, f: dataclasses.Field | None, node: yaml.Node, key: str) -> Any:
        meta = f.metadata if f is not None else {}
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        optional = False
        if origin in (typing.Union, types.UnionType):
            inner = [a for a in args if a is not type(None)]
            optional = len(inner) < len(args)
            tp = inner[0] if len(inner) == 1 else tp
            origin, args = typing.get_origin(tp), typing.get_args(tp)
        k = self.kind(node)
        if k is type(None):
            if optional:
                return None
            self.error(node, key, "must not be null")
            return None
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, node, key)
        if "parse" in meta:
            allowed = meta.get("yaml", (str,))
            if k not in allowed and not (k is int and float in allowed):
                want = " or ".join(_TYPE_NAME[t] for t in allowed)
                self.error(node, key, f"must be {want}, got {_TYPE_NAME[k]}")
                return None
            if k is list:
                items = []
                for item in node.value:
                    if self.kind(item) is not str:
                        self.error(item, key, f"list items must be strings, got {_TYPE_NAME[self.kind(item)]}")
                        return None
                    try:
                        items.append(meta["parse"]([item.value])[0])
                    except ValueError as e:
                        self.error(item, key, str(e))
                        return None
                value = tuple(items)
            else:
                try:
                    value = meta["parse"](self.plain(node))
                except ValueError as e:
                    self.error(node, key, str(e))
                    return None
        elif origin is tuple and dataclasses.is_dataclass(args[0]):
            if k is not list:
                self.error(node, key, f"must be a list, got {_TYPE_NAME[k]}")
                return None
            out = []
            for i, item in enumerate(node.value):
                out.append(self.dataclass(args[0], item, f"{key}[{i}]"))
            return tuple(out)
        elif isinstance(tp, type) and issubclass(tp, enum.Enum):
            names = [m.value for m in tp]
            if k is not str or node.value not in names:
                self.error(node, key, f"must be one of {', '.join(names)}, got {_show(node) or _TYPE_NAME[k]}")
                return None
            value = tp(node.value)  # type: ignore[assignment]
        else:
            want = tp
            if k is not want and not (want is float and k is int):
                self.error(node, key, f"must be {_TYPE_NAME[want]}, got {_TYPE_NAME[k]} {_show(node)}")
                return None
            value = self.plain(node)
            if want is float:
                value = float(value)  # type: ignore[assignment]
        if isinstance(value, float) and not math.isfinite(value):
            # .nan passes every comparison as false: a check such as `v <= 0` would let it through
            self.error(node, key, f"must be a finite number, got {_show(node) or value}")
            return None
        check = meta.get("check")
        if check is not None and value is not None:
            try:
                check(value)
            except ValueError as e:
                self.error(node, key, str(e))
                return None
        return value


def _show(node: yaml.Node) -> str:
    return f"({node.value!r})" if isinstance(node, yaml.ScalarNode) else ""


# --- cross-field rules ------------------------------------------------------------------------


def _check_rules(cfg: Config, rule_nodes: list[yaml.Node], w: _Walker) -> None:
    names: dict[str, int] = {}
    for i, (rule, node) in enumerate(zip(cfg.rules, rule_nodes)):
        key = f"rules[{i}]"
        if rule.name in names:
            w.error(node, f"{key}.name", f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])")
        names.setdefault(rule.name, i)
        a = rule.action
        if a in ("online", "offline", "online-new"):
            if (rule.count is None) == (rule.size is None):
                w.error(
                    node, key, f"action {a} needs exactly one of count or size (an unbounded target set is refused)"
                )
            if rule.target_ratio is not None:
                w.error(node, f"{key}.target_ratio", f"only for action rebalance, not {a}")
        if a == "rebalance":
            if rule.target_ratio is None and rule.count is None and rule.size is None:
                w.error(node, key, "action rebalance needs target_ratio, count or size")
            if rule.count is not None and rule.size is not None:
                w.error(node, key, "count and size are mutually exclusive")
        try:
            check_action_zone(a, rule.zone)
        except ValueError as e:
            w.error(node, f"{key}.zone", str(e))
        cap = rule.max_blocks or cfg.guards.max_blocks_per_action
        if rule.max_blocks is not None and rule.max_blocks > cfg.guards.max_blocks_per_action:
            w.error(
                node,
                f"{key}.max_blocks",
                f"{rule.max_blocks} exceeds guards.max_blocks_per_action ({cfg.guards.max_blocks_per_action})",
            )
        if rule.count is not None and rule.count > cap:
            w.error(node, f"{key}.count", f"{rule.count} exceeds the per-action cap ({cap})")
        if rule.min_available is not None and a not in ("offline", "rebalance"):
            w.error(node, f"{key}.min_available", f"only for offline and rebalance, not {a}")
    r = cfg.retry
    if r.backoff_max < r.backoff_initial:
        w.problems.append(f"{w.filename}: retry.backoff_max: must be >= retry.backoff_initial")


# --- entry points -----------------------------------------------------------------------------


def _where(filename: str, m: Any) -> str:
    return f"{filename}:{m.line + 1}:{m.column + 1}" if m is not None else filename


def _prescan(text: str, filename: str) -> None:
    """Refuse what the walker must never see, with its position: explicit tags other than the
    plain YAML types (``!!python/name``, ``!!binary``, ``!!timestamp``, local ``!tags``) and
    nesting deeper than MAX_DEPTH (PyYAML's composer recurses: 200k levels would crash it)."""
    depth = 0
    for ev in yaml.parse(text, Loader=yaml.SafeLoader):
        tag = getattr(ev, "tag", None)
        implicit = getattr(ev, "implicit", None)
        explicit = tag is not None and not (isinstance(implicit, tuple) and implicit[0]) and implicit is not True
        if tag is not None and explicit and tag not in _ALLOWED_TAGS:
            raise ConfigError(
                [f"{_where(filename, ev.start_mark)}: YAML tag {tag!r} is not allowed (plain YAML values only)"]
            )
        if isinstance(ev, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError([f"{_where(filename, ev.start_mark)}: nested deeper than {MAX_DEPTH} levels"])
        elif isinstance(ev, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_config_text(text: str, filename: str = "<config>") -> Config:
    try:
        _prescan(text, filename)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        m = e.problem_mark
        where = f"{filename}:{m.line + 1}:{m.column + 1}" if m else filename
        raise ConfigError([f"{where}: YAML syntax: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ConfigError([f"{filename}: YAML: {e}"]) from None
    w = _Walker(filename)
    if root is None:
        return Config()
    cfg = w.dataclass(Config, root, "")
    if cfg is None or w.problems:
        raise ConfigError(w.problems or [f"{filename}: invalid configuration"])
    rules_node = next((v for k, v in root.value if k.value == "rules"), None)
    rule_nodes = list(rules_node.value) if isinstance(rules_node, yaml.SequenceNode) else []
    _check_rules(cfg, rule_nodes, w)
    if w.problems:
        raise ConfigError(w.problems)
    return cfg


def load_config(path: str | None) -> Config:
    """The configuration in ``path``; all defaults (no rules) when ``path`` is None."""
    if path is None:
        return Config()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO must not hang us
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise ConfigError([f"{path}: not a regular file"])
            data = f.read(MAX_FILE + 1)
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror}"]) from None
    if len(data) > MAX_FILE:
        raise ConfigError([f"{path}: larger than {MAX_FILE} bytes (1 MiB): refused, a policy file is never truncated"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start})"]) from None
    return load_config_text(text, path)


def describe_keys(cls: Any = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, doc) for every key: the source of the docs' reference table."""
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(describe_keys(tp, key + "."))
            continue
        args = typing.get_args(tp)
        if "parse" not in f.metadata and typing.get_origin(tp) is tuple and args and dataclasses.is_dataclass(args[0]):
            out.extend(describe_keys(args[0], key + "[]."))
            continue
        default = (
            "required"
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            else repr(f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[operator]
        )
        out.append((key, default, f.metadata.get("doc", "")))
    return out
