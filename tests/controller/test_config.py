"""Strict policy validation: every error names file:line:column and the key."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import pytest

from memhp.controller.config import Config, ConfigError, describe_keys, load_config, load_config_text, parse_matcher
from memhp.units import parse_duration, parse_id_ranges, parse_size

GOOD = """\
controller:
  journal: /var/tmp/j.jsonl
  queue_size: 10
guards:
  dry_run: true
  max_blocks_per_hour: 12
  min_available: 1G
  quarantine:
    after_failures: 2
    duration: 30m
retry:
  attempts: 4
  attempt_timeout: 20s
  backoff_initial: 500ms
rules:
  - name: online-hot-added
    alertname: MemhpHotAddedOffline
    matchers: ['severity="page"', 'node=~"[0-9]+"']
    action: online-new
    count: 4
    node_label: node
  - name: give-back
    alertname: CapacityReturn
    action: offline
    size: 512M
    zone: movable
    cooldown: 1h
    min_available: 2G
  - name: zones
    alertname: KernelZoneLow
    action: rebalance
    target_ratio: 3
    max_blocks: 4
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config_text(textwrap.dedent(text), "policy.yaml")
    return e.value.problems


def test_good_config_parses_into_dataclasses():
    cfg = load_config_text(GOOD, "policy.yaml")
    assert cfg.controller.journal == "/var/tmp/j.jsonl"
    assert cfg.guards.dry_run is True
    assert cfg.guards.min_available == 1 << 30
    assert cfg.guards.quarantine.after_failures == 2 and cfg.guards.quarantine.duration == 1800.0
    assert cfg.retry.attempts == 4 and cfg.retry.attempt_timeout == 20.0 and cfg.retry.backoff_initial == 0.5
    assert cfg.retry.kill_grace == 2.0  # default kept
    r0, r1, r2 = cfg.rules
    assert (r0.action, r0.count, r0.node_label) == ("online-new", 4, "node")
    assert [str(m) for m in r0.matchers] == ['severity="page"', 'node=~"[0-9]+"']
    assert (r1.size, r1.zone, r1.cooldown, r1.min_available) == (512 << 20, "movable", 3600.0, 2 << 30)
    assert (r2.target_ratio, r2.max_blocks) == (3.0, 4)
    assert cfg.rule("zones") is r2


def test_empty_file_is_all_defaults_without_rules():
    assert load_config_text("", "x") == Config()
    assert load_config(None).rules == ()


def test_unknown_key_has_line_and_column():
    p = problems("""\
        guards:
          max_blocks_per_hour: 3
          max_block_per_action: 2
        """)
    assert len(p) == 1
    assert p[0].startswith("policy.yaml:3:3: guards.max_block_per_action: unknown key")
    assert "max_blocks_per_action" in p[0]  # a suggestion


def test_wrong_types_each_reported_with_their_line():
    p = problems("""\
        controller:
          queue_size: "10"
        guards:
          dry_run: yes please
        retry:
          attempts: 2.5
        rules:
          - name: r
            alertname: A
            action: online
            count: 1
            on_resolved: 1
        """)
    assert any(x.startswith("policy.yaml:2:15: controller.queue_size: must be an integer, got a string") for x in p)
    assert any(x.startswith("policy.yaml:4:12: guards.dry_run: must be a boolean") for x in p)
    assert any(x.startswith("policy.yaml:6:13: retry.attempts: must be an integer, got a number") for x in p)
    assert any(x.startswith("policy.yaml:12:18: rules[0].on_resolved: must be a boolean") for x in p)


def test_yaml_11_booleans_are_not_strings():
    # "off" is a YAML 1.1 boolean: a rule named off is a type error, not a silent False.
    p = problems("""\
        rules:
          - name: off
            alertname: A
            action: online
            count: 1
        """)
    assert p == ["policy.yaml:2:11: rules[0].name: must be a string, got a boolean (true/false) ('off')"]


def test_duplicate_keys_are_errors():
    p = problems("""\
        retry:
          attempts: 3
          attempts: 5
        """)
    assert p == ["policy.yaml:3:3: retry.attempts: duplicate key (first at line 2)"]


def test_missing_required_rule_keys():
    p = problems("""\
        rules:
          - name: r
            count: 1
        """)
    assert "policy.yaml:2:5: rules[0].action: required key is missing" in p


def test_bad_values_enum_regex_size_duration():
    p = problems("""\
        guards:
          min_available: 1X
          cooldown: 5 minutes
          max_movable_ratio: 7000
        rules:
          - name: r
            alertname: A
            action: explode
          - name: s
            alertname: B
            action: online
            count: 1
            matchers: ['node=~"("', 'bad']
        """)
    joined = "\n".join(p)
    assert "policy.yaml:2:18: guards.min_available: not a size" in joined
    assert "policy.yaml:3:13: guards.cooldown: not a duration" in joined
    assert "policy.yaml:4:22: guards.max_movable_ratio: must be a percentage" in joined
    assert "policy.yaml:8:13: rules[0].action: must be one of online, offline, rebalance, online-new" in joined
    assert "policy.yaml:13:16: rules[1].matchers: bad regex" in joined


def test_cross_field_rules():
    p = problems("""\
        guards:
          max_blocks_per_action: 4
        rules:
          - name: both
            alertname: A
            action: offline
            count: 1
            size: 1G
          - name: neither
            alertname: A
            action: online
          - name: toomany
            alertname: A
            action: offline
            count: 5
          - name: both
            alertname: A
            action: rebalance
            zone: movable
            target_ratio: 2
          - name: zone
            alertname: A
            action: offline
            count: 1
            zone: auto
        """)
    joined = "\n".join(p)
    assert "policy.yaml:4:5: rules[0]: action offline needs exactly one of count or size" in joined
    assert "policy.yaml:9:5: rules[1]: action online needs exactly one of count or size" in joined
    assert "rules[2].count: 5 exceeds the per-action cap (4)" in joined
    assert "rules[3].name: duplicate rule name 'both'" in joined
    assert "rules[3].zone: rebalance always moves" in joined
    assert "rules[4].zone: for action offline must be one of movable, kernel, any" in joined


def test_yaml_syntax_error_has_line():
    p = problems("guards:\n  dry_run: [true\n")
    assert len(p) == 1 and p[0].startswith("policy.yaml:3:") and "YAML syntax" in p[0]


def test_top_level_must_be_mapping():
    assert problems("- a\n- b\n") == ["policy.yaml:1:1: (top level): must be a mapping, got a list"]


def test_load_config_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path / "missing.yaml"))


def test_every_key_is_documented():
    for key, _default, doc in describe_keys():
        assert doc, f"{key} has no doc"


@pytest.mark.parametrize(
    "text,labels,expected",
    [
        ('node="0"', {"node": "0"}, True),
        ('node="0"', {"node": "01"}, False),
        ('node!="0"', {}, True),  # a missing label is the empty string, as in Alertmanager
        ('node=~"0|1"', {"node": "1"}, True),
        ('node=~"0|1"', {"node": "10"}, False),  # anchored
        ('node!~"0|1"', {"node": "10"}, True),
        ('sev=""', {}, True),
        ("sev=page", {"sev": "page"}, True),  # unquoted value
        (r'msg="a \"q\""', {"msg": 'a "q"'}, True),
        # regexes as Alertmanager users write them: the same answers as under Python's re
        ('severity=~"warning|page"', {"severity": "page"}, True),
        ('severity=~"warning|page"', {"severity": "pager"}, False),
        (r'instance=~".*\\.prod\\.example\\.com(:[0-9]+)?"', {"instance": "db1.prod.example.com:9100"}, True),
        (r'instance=~".*\\.prod\\.example\\.com(:[0-9]+)?"', {"instance": "db1.prodXexample.com"}, False),
        ('job!~"node|memhp"', {"job": "memhp"}, False),
        ('node=~".+"', {}, False),  # the missing label is "", which .+ does not match
        ('node=~""', {}, True),
        ('sev=~"(?i)PAGE"', {"sev": "page"}, True),
        ('msg=~"a.b"', {"msg": "a\nb"}, True),  # `.` matches a newline, as before
        ('zone=~"[A-Z][a-z]+"', {"zone": "Movable"}, True),
        ('zone=~"é+"', {"zone": "éé"}, True),
        ('x=~"a.b"', {"x": "a\ud800b"}, True),  # a lone surrogate (valid JSON) matches, never raises
    ],
)
def test_matchers(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


HOSTILE_MATCHING = r"""
import sys, time
from memhp.controller.config import parse_matcher

m = parse_matcher(r'instance=~"(.*\\.)*prod\\.example\\.com"')
labels = [{"instance": "a." * n + "x"} for n in range(40, 1040)]  # 81 bytes and longer, sender-chosen
start = time.monotonic()
hits = sum(m.matches(lb) for lb in labels)
print(hits, time.monotonic() - start)
"""


def test_hostile_regex_against_hostile_labels_is_linear():
    """A backtracking engine takes minutes on the first of these labels (the
    controller's worker frozen inside one C call, which no signal interrupts):
    run it in a child that can be killed."""
    try:
        out = subprocess.run(
            [sys.executable, "-c", HOSTILE_MATCHING], capture_output=True, text=True, timeout=60, check=True
        ).stdout
    except subprocess.TimeoutExpired:
        pytest.fail("1,000 hostile labels were not matched within 60 s: the regex engine backtracks")
    hits, elapsed = out.split()
    assert hits == "0" and float(elapsed) < 2.0


def test_patterns_re2_refuses_are_config_errors_with_position():
    p = problems("""\
        rules:
          - name: r
            alertname: A
            action: online
            count: 1
            matchers:
              - 'instance=~"(a)\\\\1"'
              - 'instance=~"db(?=1)"'
              - 'instance=~"(?<!x)db"'
              - 'instance=~"a{1001}"'
        """)
    assert len(p) == 1  # the walker stops at the first bad item of a list
    assert p[0].startswith("policy.yaml:7:9: rules[0].matchers: bad regex")
    assert "RE2 syntax" in p[0] and "backreferences" in p[0]
    for bad in (r'x=~"db(?=1)"', r'x=~"(?<!x)db"', r'x=~"a{1001}"', r'x=~"(a)\\1"'):
        with pytest.raises(ValueError, match=r"bad regex.*RE2 syntax"):
            parse_matcher(bad)


def test_units():
    assert parse_size("1G") == 1 << 30 and parse_size("512M") == 512 << 20 and parse_size("128MiB") == 128 << 20
    assert parse_size(4096) == 4096
    for bad in ("", "0", "1X", "-1G", True):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_duration("1h30m") == 5400 and parse_duration("500ms") == 0.5 and parse_duration(2) == 2.0
    for bad in ("", "5 m", "1y", -1):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert parse_id_ranges("40-43,47") == [40, 41, 42, 43, 47]
    for bad in ("*", "", "all", "3-1", "1-", "0-99999"):
        with pytest.raises(ValueError):
            parse_id_ranges(bad)


def test_docs_reference_every_key_and_guard():
    from pathlib import Path

    from memhp.controller.guards import __doc__ as guards_doc

    doc = (Path(__file__).resolve().parents[2] / "docs" / "controller.md").read_text()
    for key, _default, _ in describe_keys():
        assert f"`{key}`" in doc, f"docs/controller.md lacks {key}"
    for guard in (
        "paused",
        "cooldown",
        "empty_target",
        "max_blocks_per_action",
        "max_blocks_per_hour",
        "quarantine",
        "reserve",
        "ratio",
        "valid_zones_none",
        "dry_run",
        "node_label",
    ):
        assert f"`{guard}`" in doc and guard in guards_doc


def _numeric_keys(cls=Config, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every int or float key of the schema (durations are floats, sizes ints), as a path."""
    import typing

    import msgspec

    from memhp.typed import is_struct, unwrap

    out = []
    for f in msgspec.structs.fields(cls):
        tp = unwrap(f.type)[0]
        if is_struct(tp):
            out += _numeric_keys(tp, (*prefix, f.name))
        elif typing.get_origin(tp) is tuple and is_struct(typing.get_args(tp)[0]):
            out += _numeric_keys(typing.get_args(tp)[0], (*prefix, f"{f.name}[]"))
        elif tp in (int, float):
            out.append((*prefix, f.name))
    return out


NUMERIC_KEYS = _numeric_keys()


def _policy_setting(path: tuple[str, ...], value: str) -> tuple[str, str]:
    """A policy file setting ``path`` to ``value`` (last line), and the key the error names."""
    lines, indent, key = [], "", []
    for part in path[:-1]:
        if part == "rules[]":
            lines += ["rules:", "  - name: r", "    alertname: A", "    action: rebalance"]
            indent, key = "    ", ["rules[0]"]
        else:
            lines.append(f"{indent}{part}:")
            indent += "  "
            key.append(part)
    lines.append(f"{indent}{path[-1]}: {value}")
    return "\n".join(lines) + "\n", ".".join([*key, path[-1]])


def test_numeric_keys_are_found():
    assert ("rules[]", "target_ratio") in NUMERIC_KEYS and ("guards", "quarantine", "duration") in NUMERIC_KEYS
    assert len(NUMERIC_KEYS) >= 20


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf", "+.inf"])
@pytest.mark.parametrize("path", NUMERIC_KEYS, ids=".".join)
def test_every_number_must_be_finite(path, value):
    """`target_ratio: .nan` passed every check (nan compares false with everything) and the rule never acted."""
    text, key = _policy_setting(path, value)
    with pytest.raises(ConfigError) as e:
        load_config_text(text, "policy.yaml")
    last = text.splitlines()[-1]
    where = f"policy.yaml:{len(text.splitlines())}:{last.index(value) + 1}: {key}: "
    assert [p for p in e.value.problems if p.startswith(where)], (where, e.value.problems)


def test_target_ratio_nan_is_refused_by_check_config(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: r\n    alertname: A\n    action: rebalance\n    target_ratio: .nan\n")
    r = subprocess.run(
        [sys.executable, "-m", "memhp.controller.cli", "--config.file", str(policy), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and f"{policy}:5:19: rules[0].target_ratio: must be a finite number" in r.stderr


@pytest.mark.parametrize("value", [math.nan, math.inf, "9" * 400])  # 400 digits: float() rounds to inf
def test_durations_are_finite(value):
    with pytest.raises(ValueError, match="finite"):
        parse_duration(value)


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e400", "0", "-1"])
def test_act_target_ratio_is_finite_and_positive(text):
    argv = ["memhp.controller.cli", "act", "rebalance", f"--target-ratio={text}"]
    r = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--target-ratio: invalid positive_number value" in r.stderr, r.stderr


def test_problems_in_many_rules_each_name_their_own_rule_and_line():
    """msgspec stops at the first problem: the converter drops what was reported and goes on, and
    the rules after a dropped one keep their own index and line."""
    p = problems("""\
        rules:
          - name: a
          - 7
          - name: c
            alertname: C
            action: online
            count: zero
          - name: d
            alertname: D
            action: online
            count: 1
            zone: sideways
        """)
    assert p == [
        "policy.yaml:2:5: rules[0].action: required key is missing",
        "policy.yaml:3:5: rules[1]: must be a mapping, got an integer",
        "policy.yaml:7:12: rules[2].count: must be an integer, got a string ('zero')",
        "policy.yaml:12:11: rules[3].zone: must be one of movable, kernel, auto, any, got ('sideways')",
    ]


def test_a_file_with_very_many_problems_reports_the_first_hundred():
    rules = "".join(f"  - name: r{i}\n    alertname: A\n    action: online\n    count: x\n" for i in range(150))
    p = problems("rules:\n" + rules)
    assert len(p) == 101 and p[-1] == "policy.yaml: more problems not shown (fix the first 100)"
    assert p[99].startswith("policy.yaml:401:12: rules[99].count: must be an integer")


def test_field_and_cross_field_problems_are_reported_in_one_pass():
    # Issue 21: cross-field problems used to appear only once every field error was fixed.
    p = problems("""\
        guards:
          max_blocks_per_action: 4
          cooldown: soon
        retry:
          backoff_initial: 10s
          backoff_max: 5s
          attempts: many
        rules:
          - name: bad-field
            alertname: A
            action: online
            count: 1
            cooldown: later
          - name: cross
            alertname: A
            action: online
          - name: bad-action
            alertname: A
            action: explode
            count: 1
          - name: cap
            alertname: A
            action: offline
            count: 9
            min_available: -1
        """)
    joined = "\n".join(p)
    # field errors ...
    assert "policy.yaml:3:13: guards.cooldown: not a duration" in joined
    assert "policy.yaml:7:13: retry.attempts: must be an integer" in joined
    assert "policy.yaml:13:15: rules[0].cooldown: not a duration" in joined
    assert "rules[2].action: must be one of" in joined
    # ... and, in the same pass, the cross-field ones, each named by the rule's index in the file
    assert "policy.yaml:14:5: rules[1]: action online needs exactly one of count or size" in joined
    assert "rules[3].count: 9 exceeds the per-action cap (4)" in joined
    assert "retry.backoff_max: must be >= retry.backoff_initial" in joined
    # a value already reported is not reported again as missing
    assert not any("rules[0]: action online needs" in x for x in p)


def test_a_dropped_value_does_not_cause_a_second_cross_field_error():
    p = problems("""\
        rules:
          - name: r
            alertname: A
            action: online
            count: -2
        """)
    assert len(p) == 1 and "rules[0].count" in p[0], p


def check_config(tmp_path, text: str) -> subprocess.CompletedProcess:
    policy = tmp_path / "policy.yaml"
    policy.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, "-m", "memhp.controller.cli", "--config.file", str(policy), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_warns_about_alerts_and_severities_memhp_does_not_ship(tmp_path):
    r = check_config(
        tmp_path,
        """\
        rules:
          - name: unknown-alert
            alertname: MemhpHotAddedMemoryOffline
            action: online-new
            count: 1
          - name: wrong-severity
            alertname: MemhpBlocksLeftOffline
            matchers: ['severity="page"']
            action: online-new
            count: 1
          - name: regex-never
            alertname: MemhpMovableKernelRatioCritical
            matchers: ['severity=~"warn.*"']
            action: rebalance
            target_ratio: 3
          - name: fine
            alertname: MemhpMovableKernelRatioCritical
            matchers: ['severity=~"critical|page"']
            action: rebalance
            target_ratio: 3
        """,
    )
    assert r.returncode == 0, r.stderr
    warnings = [x for x in r.stderr.splitlines() if "warning:" in x]
    assert len(warnings) == 3, r.stderr
    assert "rules[0] (unknown-alert): alertname 'MemhpHotAddedMemoryOffline' is not an alert memhp ships" in r.stderr
    assert 'rules[1] (wrong-severity): matcher severity="page" never matches MemhpBlocksLeftOffline' in r.stderr
    assert "rules[2] (regex-never)" in r.stderr and "fine" not in r.stderr


def test_the_alert_catalog_is_the_shipped_rule_files():
    import yaml

    from memhp.controller.policy_lint import shipped_alerts

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    groups = yaml.safe_load((root / "alerts" / "memhp.alerts.yaml").read_text())["groups"]
    seen: dict[str, set[str]] = {}
    for g in groups:
        for r in g["rules"]:
            seen.setdefault(r["alert"], set()).add(r["labels"]["severity"])
    assert {k: set(v) for k, v in shipped_alerts().items()} == seen


# --- issue 23: the memory-added event trigger -------------------------------------------------


def test_event_rule_loads_with_zone_and_settle():
    cfg = load_config_text(
        textwrap.dedent("""\
        controller:
          event_settle: 500ms
        rules:
          - name: hot-added
            event: memory-added
            action: online
            zone: auto
        """)
    )
    (rule,) = cfg.rules
    assert (rule.event, rule.alertname, rule.zone, cfg.controller.event_settle) == ("memory-added", None, "auto", 0.5)
    assert not rule.matches("memory-added", {})  # an event rule never matches an alert


def test_event_rule_needs_exactly_one_trigger_and_no_alert_keys():
    assert problems("controller:\n  event_settle: 11s\n") == [
        "policy.yaml:2:17: controller.event_settle: must be at most 10s"
    ]
    p = problems("""\
        rules:
          - name: both
            alertname: A
            event: memory-added
            action: online
          - name: neither
            action: online
            count: 1
          - name: wrong
            event: memory-added
            action: offline
            count: 2
            on_resolved: true
            matchers: ['node="0"']
        """)
    assert "policy.yaml:2:5: rules[0]: needs exactly one of alertname (an alert) or event (a local kernel event)" in p
    assert "policy.yaml:6:5: rules[1]: needs exactly one of alertname (an alert) or event (a local kernel event)" in p
    assert any("rules[2].action: event memory-added onlines the added block: action must be online" in x for x in p)
    for k in ("count", "on_resolved", "matchers"):
        assert any(f"rules[2].{k}: not for event rules" in x for x in p), (k, p)
    p = problems("""\
        rules:
          - name: unknown
            event: memory-removed
            action: online
        """)
    assert p == ["policy.yaml:3:12: rules[0].event: must be one of memory-added, got ('memory-removed')"]
