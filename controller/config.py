"""The controller's policy file: YAML, validated strictly, with line numbers.

:mod:`memhp.typed` reads the file (plain YAML values only, nesting and size
bounded) and converts it with msgspec into the Structs below, so every error
names ``file:line:column`` and the dotted key.  Unknown keys, duplicate keys,
wrong types, out-of-range values and contradictory settings are all errors;
nothing is silently defaulted except keys that are absent.

Each Struct is one section.  A new section (e.g. for the alert sources) is
one Struct plus one field on :class:`Config`.  What a key may hold is declared
on its type: bounds with ``msgspec.Meta``, its doc as the Meta's
``description``, and (``extra``) how a duration or a size is parsed and the
wording of an error where the generic one would say less.
"""

from __future__ import annotations

import os
import re
import stat
import typing
from typing import Annotated, Any

import msgspec
import re2
import yaml
from msgspec import Meta, Struct, field

from memhp import typed
from memhp.units import parse_duration, parse_size

from .vocab import Action, Event, Zone, check_action_zone

MAX_FILE = 1 << 20  # a policy file larger than this is refused, never truncated
MAX_DEPTH = 32  # nesting of the YAML document (the schema needs 5)
HOUR = 3600.0
DAY = 86400.0


class ConfigError(ValueError):
    """One or more problems in the policy file, each with its position."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# --- what a key may hold ---------------------------------------------------------------------


def _human(seconds: float) -> str:
    for unit, n in (("d", DAY), ("h", HOUR), ("m", 60.0)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds / n:.0f}{unit}"
    return f"{seconds:g}s"


def _doc(doc: str, error: str | None = None, **bounds: Any) -> Meta:
    return Meta(description=doc, extra={"error": error} if error else None, **bounds)


def _seconds(
    doc: str, *, positive: bool = False, lower: float = 0, upper: float = DAY, error: str | None = None
) -> Meta:
    """A duration ("30s", "1h30m" or a number of seconds), finite and at most ``upper`` (a duration of
    30d must not reach a timer)."""
    extra: dict[str, Any] = {"parse": parse_duration, "yaml": (int, float, str)}
    extra["kinds"] = "an integer or a number or a string"
    extra.update({"error": error} if error else {"at_most": f"must be at most {_human(upper)}"})
    return Meta(description=doc, extra=extra, le=upper, **({"gt": 0} if positive else {"ge": lower}))


def _bytes(doc: str, **bounds: Any) -> Meta:
    """A size ("512M", "1G" or a number of bytes)."""
    extra = {"parse": parse_size, "yaml": (int, str), "kinds": "an integer or a string"}
    if bounds:
        extra["error"] = f"must be between {bounds['ge']} and {bounds['le']}"
    return Meta(description=doc, extra=extra, **bounds)


def parse_percent(text: str | int | float) -> float:
    """``"5%"``, ``"12.5%"`` or a bare number -> percent as a float (0-100 checked by the field)."""
    if isinstance(text, bool):
        raise ValueError("a percentage is a number or a string such as '5%'")
    if isinstance(text, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*%?\s*", text)
        if not m:
            raise ValueError(f"not a percentage: {text!r} (use e.g. '5%', '12.5%' or 100)")
        text = float(m.group(1))
    return float(text)


def _percent(doc: str) -> Meta:
    extra = {
        "parse": parse_percent,
        "yaml": (int, float, str),
        "kinds": "an integer or a number or a string",
        "error": "must be a percentage between 0 and 100",
    }
    return Meta(description=doc, extra=extra, ge=0, le=100)


_PERCENT = "must be a percentage between 1 and 6300 (63:1 is impossible, see memory-hotplug.rst)"


# --- matchers ---------------------------------------------------------------------------------

_MATCHER = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*\Z", re.DOTALL)

# RE2, as Alertmanager: matching takes time linear in the label, whatever the pattern.  Python's
# backtracking re spent minutes on `(.*\.)*prod\.example\.com` against 81 sender-chosen bytes,
# with the controller's worker stuck inside one C call.
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a refused pattern is a config error with its position, not stderr noise
_RE2_OPTIONS.dot_nl = True  # `.` matches a newline, as it always did here (re.DOTALL)


class Matcher:
    """One Alertmanager-style label matcher: ``name="v"``, ``!=``, ``=~``, ``!~``.

    Regexes are anchored at both ends, as Alertmanager anchors them; a label
    the alert does not carry matches as the empty string.  Not a dataclass:
    msgspec would read and write one as a mapping, and a matcher is a string.
    """

    __slots__ = ("label", "op", "regex", "value")

    def __init__(self, label: str, op: str, value: str, regex: Any = None) -> None:
        self.label, self.op, self.value = label, op, value
        self.regex = regex  # an RE2 pattern

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and (self.label, self.op, self.value) == (other.label, other.op, other.value)

    def __hash__(self) -> int:
        return hash((self.label, self.op, self.value))

    def __repr__(self) -> str:
        return f"Matcher({self})"

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


class _Section(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class RetryConfig(_Section, frozen=True, kw_only=True):
    """How one block's state change is attempted (the actuator's budget)."""

    attempts: Annotated[int, _doc("Maximum write attempts per block change (1 = no retry).", gt=0)] = 3
    attempt_timeout: Annotated[
        float,
        _seconds("Per-attempt deadline; then the writer child gets SIGTERM (at most 1h).", positive=True, upper=HOUR),
    ] = 30.0
    kill_grace: Annotated[
        float, _seconds("Time between SIGTERM and SIGKILL of a writer child (at most 5m).", positive=True, upper=300.0)
    ] = 2.0
    total_timeout: Annotated[
        float,
        _seconds(
            "Bound on one block change: no attempt starts unless it can end (worst case attempt_timeout + "
            "2 x kill_grace) within this time from the first (at most 1d).",
            positive=True,
        ),
    ] = 120.0
    backoff_initial: Annotated[float, _seconds("First backoff; doubles per retry (at most 1h).", upper=HOUR)] = 1.0
    backoff_max: Annotated[float, _seconds("Longest backoff between attempts (at most 1h).", upper=HOUR)] = 30.0
    backoff_jitter: Annotated[
        float, _seconds("Random extra backoff, uniform in [0, jitter] (at most 1h).", upper=HOUR)
    ] = 1.0


class QuarantineConfig(_Section, frozen=True, kw_only=True):
    after_failures: Annotated[int, _doc("Consecutive failed changes of one block before it is quarantined.", gt=0)] = 3
    duration: Annotated[
        float,
        _seconds("How long a quarantined block is left alone (at most 30d).", positive=True, upper=30 * DAY),
    ] = 3600.0


class GuardsConfig(_Section, frozen=True, kw_only=True):
    dry_run: Annotated[bool, _doc("Plan and journal, never write sysfs.")] = False
    pause_file: Annotated[str, _doc("While this file exists, nothing is changed.")] | None = (
        "/run/memhp-controller/pause"
    )
    max_blocks_per_hour: Annotated[
        int, _doc("Blocks changed in any sliding hour, all rules and `act` together.", gt=0)
    ] = 16
    max_blocks_per_action: Annotated[
        int, _doc("Blocks one action may change (a rule's max_blocks may lower it).", gt=0)
    ] = 8
    cooldown: Annotated[
        float, _seconds("Default time between two actions of the same rule (at most 7d).", upper=7 * DAY)
    ] = 600.0
    min_available: Annotated[int, _bytes("Offlining never plans below this much MemAvailable.")] = 512 << 20
    max_movable_ratio: (
        Annotated[
            int,
            _doc(
                "Ceiling of MOVABLE:KERNEL in percent for any online to ZONE_MOVABLE; default: the kernel's "
                "auto_movable_ratio (301 if unreadable).",
                _PERCENT,
                ge=1,
                le=6300,
            ),
        ]
        | None
    ) = None
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)


class ControllerConfig(_Section, frozen=True, kw_only=True):
    journal: Annotated[str, _doc("Append-only JSON Lines journal (also the idempotency store).")] = (
        "/var/lib/memhp-controller/journal.jsonl"
    )
    queue_size: Annotated[
        int,
        _doc(
            "Alerts waiting for the worker (1-100000); beyond it submit() raises SinkFull (429).",
            "must be between 1 and 100000",
            ge=1,
            le=100_000,
        ),
    ] = 256
    action_timeout: Annotated[
        float, _seconds("No new block change of one action starts after this long (at most 1d).", positive=True)
    ] = 900.0
    journal_max_size: Annotated[
        int,
        _bytes(
            "Rotate the journal when it is larger than this (64K-1G); start-up reads at most about this much.",
            ge=64 << 10,
            le=1 << 30,
        ),
    ] = 16 << 20
    journal_max_age: Annotated[
        float,
        _seconds(
            "Rotate the journal when its first record is older than this (1m-365d).",
            lower=60,
            upper=365 * DAY,
            error=f"must be between 60 and {365 * DAY}",
        ),
    ] = 7 * DAY
    journal_keep: Annotated[
        int,
        _doc(
            "Rotated journals kept as <journal>.1 .. .N (0-100; 0 keeps none).",
            "must be between 0 and 100",
            ge=0,
            le=100,
        ),
    ] = 3
    idempotency_retention: Annotated[
        float,
        _seconds(
            "How long an acted alert occurrence is remembered across rotations (at most 365d; also at most "
            "50000 occurrences).",
            positive=True,
            upper=365 * DAY,
        ),
    ] = 30 * DAY
    event_settle: Annotated[
        float,
        _seconds(
            "Event rules: how long after a block's add uevent it must still be offline before memhp onlines it "
            "(the kernel's auto-online and udev rules go first; at most 10s).",
            upper=10.0,
        ),
    ] = 0.2


# --- fleet-wide safety (issue 22): budget on etcd, Prometheus gate -----------------------------


class EtcdConfig(_Section, frozen=True, kw_only=True):
    endpoints: Annotated[
        tuple[Annotated[str, Meta(pattern=r"^https?://[^/\s]+/?$")], ...],
        _doc(
            "etcd v3 client URLs (`https://etcd-1:2379`); tried in order.",
            "must be 1-16 URLs http(s)://host:port",
            min_length=1,
            max_length=16,
        ),
    ]
    prefix: Annotated[
        str, _doc("Key prefix of the budget's slots and counters.", "must start with /", pattern=r"^/[ -~]{0,200}$")
    ] = "/memhp/budget/"
    timeout: Annotated[float, _seconds("Each request to etcd (at most 30s).", positive=True, upper=30)] = 5.0
    ca_file: Annotated[str, _doc("CA bundle that must have signed etcd's certificate (https).")] | None = None
    cert_file: Annotated[str, _doc("Client certificate for etcd (mutual TLS).")] | None = None
    key_file: Annotated[str, _doc("Key of cert_file.")] | None = None
    username: Annotated[str, _doc("etcd user (password in password_file).")] | None = None
    password_file: Annotated[str, _doc("File holding the etcd user's password.")] | None = None


class BudgetLimit(_Section, frozen=True, kw_only=True):
    max_concurrent: Annotated[int, _doc("Nodes acting at once, fleet-wide (1-10000).", ge=1, le=10_000)] | None = None
    max_actions_per_hour: (
        Annotated[int, _doc("Actions started in any sliding hour, fleet-wide (1-1000000).", ge=1, le=1_000_000)] | None
    ) = None


class BudgetConfig(_Section, frozen=True, kw_only=True):
    backend: Annotated[
        typing.Literal["etcd"], _doc("Where the budget is held: etcd (a Kubernetes Lease backend can follow).")
    ] = "etcd"
    etcd: EtcdConfig
    lease_ttl: Annotated[
        float,
        _seconds(
            "TTL of the lease a slot is held on: a controller killed while acting frees it after this (5s-1h).",
            lower=5,
            upper=HOUR,
            error="must be between 5s and 1h",
        ),
    ] = 60.0
    max_concurrent: Annotated[
        int, _doc("Nodes acting at once, fleet-wide, all rules together (1-10000).", ge=1, le=10_000)
    ]
    max_actions_per_hour: (
        Annotated[
            int, _doc("Actions started in any sliding hour, fleet-wide, all rules (1-1000000).", ge=1, le=1_000_000)
        ]
        | None
    ) = None
    wait: Annotated[
        float,
        _seconds("How long an action waits for a free slot before it is refused (at most 1h).", upper=HOUR),
    ] = 300.0


class GateQuery(_Section, frozen=True, kw_only=True):
    name: Annotated[
        str,
        _doc(
            "Name of the check (journal, metrics).",
            "must be 1-64 characters of letters, digits, _ . : -",
            pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        ),
    ]
    expr: Annotated[
        str,
        _doc(
            "PromQL: any series in its result refuses the action.",
            "must be 1-4096 characters",
            min_length=1,
            max_length=4096,
        ),
    ]


class GateConfig(_Section, frozen=True, kw_only=True):
    prometheus: Annotated[
        str,
        _doc(
            "Prometheus-compatible query API base URL (Prometheus, Thanos, Mimir).",
            "must be an http(s) URL",
            pattern=r"^https?://\S+$",
        ),
    ]
    timeout: Annotated[
        float, _seconds("Each query (at most 60s); slower counts as refused.", positive=True, upper=60)
    ] = 5.0
    ca_file: Annotated[str, _doc("CA bundle that must have signed the query API's certificate (https).")] | None = None
    bearer_token_file: Annotated[str, _doc("Bearer token sent to the query API (https only).")] | None = None
    refuse_when: Annotated[
        tuple[GateQuery, ...], _doc("Checks run before every action of every rule.", max_length=32)
    ] = ()


class FleetConfig(_Section, frozen=True, kw_only=True):
    host: (
        Annotated[
            str,
            _doc(
                "This node's name in the fleet (budget slots, rollout hash); default: the host name.",
                "must be 1-253 characters of letters, digits, . _ -",
                pattern=r"^[A-Za-z0-9._-]{1,253}$",
            ),
        ]
        | None
    ) = None
    budget: BudgetConfig | None = None
    gate: GateConfig | None = None


_MATCHER_ITEM = Meta(
    extra={"parse": parse_matcher, "yaml": (str,), "type_error": "list items must be strings"},
)


class Rule(_Section, frozen=True, kw_only=True):
    name: Annotated[
        str,
        _doc(
            "Unique rule name (journal, metrics).",
            "must be 1-64 characters of letters, digits, _ . : -",
            pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        ),
    ]
    alertname: (
        Annotated[
            str, _doc("The alert's `alertname`, exactly (or `event`, not both).", "must not be empty", pattern=r"\S")
        ]
        | None
    ) = None
    event: (
        Annotated[
            Event,
            _doc(
                "A local kernel event instead of an alert: `memory-added` runs the rule for each hot-added block "
                "still offline after controller.event_settle (action online only)."
            ),
        ]
        | None
    ) = None
    action: Annotated[Action, _doc("What to do: online, offline, rebalance or online-new.")]
    matchers: Annotated[
        tuple[Annotated[Matcher, _MATCHER_ITEM], ...],
        _doc('Further label matchers, Alertmanager syntax: `severity="critical"`, `node=~"0|1"`.'),
    ] = ()
    count: Annotated[int, _doc("Number of blocks (online, offline, online-new, rebalance).", gt=0)] | None = None
    size: Annotated[int, _bytes("Amount of memory, a multiple of the block size (instead of count).")] | None = None
    zone: (
        Annotated[
            Zone,
            _doc(
                "online/online-new: movable | kernel | auto (default auto). offline: movable (default) | kernel | any."
            ),
        ]
        | None
    ) = None
    target_ratio: Annotated[float, _doc("rebalance: MOVABLE:KERNEL to reach, e.g. 3 for 3:1.", gt=0)] | None = None
    max_blocks: Annotated[int, _doc("Cap for this rule; at most guards.max_blocks_per_action.", gt=0)] | None = None
    node_label: (
        Annotated[
            str,
            _doc("Alert label naming the NUMA node to act on (e.g. `node`); an alert without it does not act."),
        ]
        | None
    ) = None
    cooldown: Annotated[float, _seconds("Overrides guards.cooldown for this rule.")] | None = None
    min_available: Annotated[int, _bytes("Overrides guards.min_available for this rule.")] | None = None
    on_resolved: Annotated[bool, _doc("Act when the alert resolves instead of fires.")] = False
    rollout: Annotated[
        float,
        _percent(
            "Share of the fleet that acts (`5%`), by a stable hash of fleet.host and the rule name; the rest "
            "dry-run. Raising it only adds hosts."
        ),
    ] = 100.0
    budget: Annotated[BudgetLimit, _doc("This rule's own fleet-wide limits, within fleet.budget's.")] | None = None
    gate: Annotated[
        tuple[GateQuery, ...], _doc("Checks run before this rule acts, after fleet.gate.refuse_when.", max_length=32)
    ] = ()

    def matches(self, alert_name: str, labels: typing.Mapping[str, str]) -> bool:
        return (
            self.alertname is not None
            and alert_name == self.alertname
            and all(m.matches(labels) for m in self.matchers)
        )


class Config(_Section, frozen=True, kw_only=True):
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    guards: GuardsConfig = field(default_factory=GuardsConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    rules: tuple[Rule, ...] = ()

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def to_dict(self) -> dict:
        """Plain data for logging the effective configuration (a matcher as its text)."""
        return msgspec.to_builtins(self, enc_hook=str)


# --- cross-field rules ------------------------------------------------------------------------


class _CrossCheck:
    """Checks across fields, run on what converted even when some values did not: every problem of a
    file is reported in one pass.  A check whose fields were already reported (and dropped) is skipped,
    so a bad ``count`` is not also reported as a missing one."""

    def __init__(self, doc: typed.Document) -> None:
        self.doc = doc

    def rule_node(self, i: int) -> tuple[int, yaml.Node]:
        orig = self.doc.original_index(("rules",), i)
        return orig, self.doc.index[("rules", orig)]

    def error(self, node: yaml.Node, key: str, msg: str, *needs: typed.Path) -> None:
        if not any(self.doc.dropped(p) for p in needs):
            self.doc.error(node, key, msg)


def _check_rules(cfg: Config, w: _CrossCheck) -> None:
    names: dict[str, int] = {}
    for i, rule in enumerate(cfg.rules):
        orig, node = w.rule_node(i)
        key = f"rules[{orig}]"
        at = ("rules", orig)
        if rule.name in names:
            w.error(node, f"{key}.name", f"duplicate rule name {rule.name!r} (also rules[{names[rule.name]}])")
        names.setdefault(rule.name, orig)
        event, alert = (*at, "event"), (*at, "alertname")
        if (rule.alertname is None) == (rule.event is None):
            msg = "needs exactly one of alertname (an alert) or event (a local kernel event)"
            w.error(node, key, msg, event, alert)
        if rule.event is not None:
            _check_event_rule(rule, node, key, w)
        elif not w.doc.dropped(event):  # an event rule whose event was bad: reported, no alert checks
            _check_targets(rule, node, key, at, w)
        try:
            check_action_zone(rule.action, rule.zone)
        except ValueError as e:
            w.error(node, f"{key}.zone", str(e), (*at, "zone"), (*at, "action"))
        _check_caps(cfg, rule, node, key, at, w)
    r = cfg.retry
    if r.backoff_max < r.backoff_initial:
        w.error(
            w.doc.index.get(("retry", "backoff_max"), w.doc.index[()]),
            "retry.backoff_max",
            "must be >= retry.backoff_initial",
            ("retry", "backoff_max"),
            ("retry", "backoff_initial"),
        )


# Keys that describe an alert or a target count: an event rule's target is the block the kernel added.
_NOT_FOR_EVENTS = ("matchers", "count", "size", "target_ratio", "node_label", "min_available", "on_resolved")


def _check_event_rule(rule: Rule, node: yaml.Node, key: str, w: _CrossCheck) -> None:
    if rule.action != "online":
        w.error(node, f"{key}.action", f"event {rule.event} onlines the added block: action must be online")
    for k in _NOT_FOR_EVENTS:
        if getattr(rule, k) not in (None, (), False):
            w.error(node, f"{key}.{k}", "not for event rules (the target is each added block)")


def _check_caps(cfg: Config, rule: Rule, node: yaml.Node, key: str, at: typed.Path, w: _CrossCheck) -> None:
    per_action = ("guards", "max_blocks_per_action")
    cap = rule.max_blocks or cfg.guards.max_blocks_per_action
    if rule.max_blocks is not None and rule.max_blocks > cfg.guards.max_blocks_per_action:
        w.error(
            node,
            f"{key}.max_blocks",
            f"{rule.max_blocks} exceeds guards.max_blocks_per_action ({cfg.guards.max_blocks_per_action})",
            per_action,
        )
    if rule.count is not None and rule.count > cap:
        w.error(
            node, f"{key}.count", f"{rule.count} exceeds the per-action cap ({cap})", per_action, (*at, "max_blocks")
        )
    if rule.min_available is not None and rule.action not in ("offline", "rebalance"):
        w.error(node, f"{key}.min_available", f"only for offline and rebalance, not {rule.action}", (*at, "action"))


def _check_targets(rule: Rule, node: yaml.Node, key: str, at: typed.Path, w: _CrossCheck) -> None:
    """What an action needs to know how much to change: bounded, and one way only."""
    a = rule.action
    amount = ((*at, "count"), (*at, "size"), (*at, "action"))
    if a in ("online", "offline", "online-new"):
        if (rule.count is None) == (rule.size is None):
            w.error(
                node,
                key,
                f"action {a} needs exactly one of count or size (an unbounded target set is refused)",
                *amount,
            )
        if rule.target_ratio is not None:
            w.error(node, f"{key}.target_ratio", f"only for action rebalance, not {a}", (*at, "action"))
    if a == "rebalance":
        if rule.target_ratio is None and rule.count is None and rule.size is None:
            w.error(node, key, "action rebalance needs target_ratio, count or size", *amount, (*at, "target_ratio"))
        if rule.count is not None and rule.size is not None:
            w.error(node, key, "count and size are mutually exclusive")


def _check_fleet(cfg: Config, w: _CrossCheck) -> None:
    """fleet: what each part needs of the others (issue 22)."""
    f = cfg.fleet
    b, g = f.budget, f.gate
    where = w.doc.filename
    if g is not None and g.bearer_token_file and not g.prometheus.startswith("https:"):
        w.doc.problems.append(f"{where}: fleet.gate.bearer_token_file: a bearer token is sent over https only")
    if g is not None and g.ca_file and not g.prometheus.startswith("https:"):
        w.doc.problems.append(f"{where}: fleet.gate.ca_file: only for an https prometheus URL")
    if b is not None:
        e = b.etcd
        if (e.username is None) != (e.password_file is None):
            w.doc.problems.append(f"{where}: fleet.budget.etcd: username and password_file go together")
        if e.key_file and not e.cert_file:
            w.doc.problems.append(f"{where}: fleet.budget.etcd.key_file: needs cert_file")
        if (e.ca_file or e.cert_file) and not any(u.startswith("https:") for u in e.endpoints):
            w.doc.problems.append(f"{where}: fleet.budget.etcd: ca_file/cert_file need https endpoints")
    for i, rule in enumerate(cfg.rules):
        orig, node = w.rule_node(i)
        key = f"rules[{orig}]"
        if rule.gate and g is None:
            w.error(node, f"{key}.gate", "needs fleet.gate (the Prometheus the checks run against)")
        if rule.budget is None:
            continue
        if b is None:
            w.error(node, f"{key}.budget", "needs fleet.budget (where the budget is held)")
            continue
        if rule.budget.max_concurrent is not None and rule.budget.max_concurrent > b.max_concurrent:
            w.error(
                node,
                f"{key}.budget.max_concurrent",
                f"{rule.budget.max_concurrent} exceeds fleet.budget.max_concurrent ({b.max_concurrent})",
            )
        hour, fleet_hour = rule.budget.max_actions_per_hour, b.max_actions_per_hour
        if hour is not None and fleet_hour is not None and hour > fleet_hour:
            w.error(
                node,
                f"{key}.budget.max_actions_per_hour",
                f"{hour} exceeds fleet.budget.max_actions_per_hour ({fleet_hour})",
            )


# --- entry points -----------------------------------------------------------------------------


def load_config_text(text: str, filename: str = "<config>") -> Config:
    try:
        root = typed.compose(text, filename, MAX_DEPTH)
    except typed.YAMLProblem as e:
        raise ConfigError([str(e)]) from None
    if root is None:
        return Config()
    doc = typed.Document(root, Config, filename)
    cfg = doc.convert()
    if doc.partial is not None:
        _check_rules(doc.partial, _CrossCheck(doc))
        _check_fleet(doc.partial, _CrossCheck(doc))
    if cfg is None or doc.problems:
        raise ConfigError(doc.problems or [f"{filename}: invalid configuration"])
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
    for f in msgspec.structs.fields(cls):
        key = f"{prefix}{f.name}"
        tp, meta = typed.unwrap(f.type)
        item = typed.unwrap(typing.get_args(tp)[0])[0] if typing.get_origin(tp) is tuple else None
        if typed.is_struct(tp):
            out.extend(describe_keys(tp, key + "."))
        elif typed.is_struct(item):
            out.extend(describe_keys(item, key + "[]."))
        else:
            default = (
                "required" if f.required else repr(f.default_factory() if f.default is msgspec.NODEFAULT else f.default)
            )
            out.append((key, default, (meta and meta.description) or ""))
    return out
