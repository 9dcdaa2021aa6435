"""memhp's Prometheus rules, checked and unit-tested with promtool.

* the committed rule files are exactly what alerts/generate.py renders from
  memhp/thresholds.yaml;
* ``promtool check rules`` accepts every rule file;
* every alert has its own ``promtool test rules`` file (tests/alerts/promtool/
  <Alert>.yaml) that checks exact labels and annotations; one pytest test per
  alert, so a failure names the alert;
* in every one of them the alert is *not* firing before its ``for:`` and is
  firing after -- and the "not firing" case is proven to be held back by
  ``for:`` (with ``for: 0`` the same case fails);
* every recording rule has an expression test;
* every alert has severity, summary, description and a runbook_url whose
  anchor exists in docs/runbooks.md.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alerts import generate
from tests.helpers.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
ALERTS_DIR = REPO / "alerts"

RULE_FILES = sorted(ALERTS_DIR.glob("*.yaml"))
RULE_FILES = [p for p in RULE_FILES if p.name != "thresholds.yaml"]
PROMTOOL_DIR = Path(__file__).resolve().parent / "promtool"
TESTDATA = Path(__file__).resolve().parent / "testdata"
RUNBOOKS = REPO / "docs" / "runbooks.md"
RECORDING_TESTS = PROMTOOL_DIR / "recording-rules.yaml"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def all_rules(kind: str) -> list[dict]:
    out = []
    for f in RULE_FILES:
        for g in load(f)["groups"]:
            out += [r for r in g["rules"] if kind in r]
    return out


ALERTS = {r["alert"]: r for r in all_rules("alert")}
RECORDS = [r["record"] for r in all_rules("record")]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Debian's promtool; a missing one fails the test (scripts/setup.sh installs it)."""
    return subprocess.run([require_tool("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def duration_s(d: str) -> int:
    total = 0
    for n, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", d):
        total += int(n) * {"ms": 0, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}[unit]
    return total


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub generates for the headings of a markdown file."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if m and not in_code:
            slug = re.sub(r"[^\w\- ]", "", m.group(2).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


# --------------------------------------------------------------------------- generated files


def test_committed_rule_files_are_generated_from_thresholds():
    rendered = generate.render()
    assert sorted(rendered) == sorted(p.name for p in RULE_FILES)
    for name, text in rendered.items():
        assert (ALERTS_DIR / name).read_text() == text, (
            f"alerts/{name} is out of date: run .venv/bin/python -m alerts.generate"
        )


def test_generator_check_mode_detects_a_changed_threshold(tmp_path):
    t = generate.load_thresholds()
    t["movable_kernel_ratio"]["critical"] = 5
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(t))
    for name in generate.render():
        shutil.copy(ALERTS_DIR / name, tmp_path / name)
    assert generate.main(["--check", "--thresholds", str(tmp_path / "t.yaml"), "--out", str(tmp_path)]) == 1
    assert generate.main(["--thresholds", str(tmp_path / "t.yaml"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / generate.ALERTS_FILE).read_text()
    assert "memhp_node_movable_kernel_ratio) > 5" in text
    assert generate.main(["--check", "--thresholds", str(tmp_path / "t.yaml"), "--out", str(tmp_path)]) == 0


# --------------------------------------------------------------------------- promtool check


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(rule_file):
    r = promtool("check", "rules", str(rule_file))
    assert r.returncode == 0, r.stdout + r.stderr


def test_promtool_check_rules_planned_floor_example():
    r = promtool("check", "rules", str(TESTDATA / "planned-floors.rules.yaml"))
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- shape of every alert


FLEET_WIDE = {"MemhpControllerAlertmanagerPollsFailing"}


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_labels_and_annotations(name):
    rule = ALERTS[name]
    assert re.fullmatch(r"Memhp[A-Z][A-Za-z]+", name)
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert (
        rule["annotations"]["runbook_url"]
        == f"https://github.com/memhp/memhp/blob/main/docs/runbooks.md#{name.lower()}"
    )
    assert duration_s(rule["for"]) > 0, "every alert needs a for: (flapping, and testable before/after)"
    # Every label the annotations refer to must survive the expression's aggregation:
    # instance always (the node-identifying label the controller's pull mode filters on).
    used = set(re.findall(r"\$labels\.([a-zA-Z_]+)", " ".join(rule["annotations"].values())))
    if name in FLEET_WIDE:
        # One alert for the fleet: an instance label would match the pollers' own filter
        # (instance="<node>") and feed the polls it reports on.
        assert not used and "count(" in rule["expr"] and "by (instance)" not in rule["expr"].split("count(")[0]
        return
    assert "instance" in used, "annotations must say which host"


def test_runbook_has_a_section_per_alert():
    anchors = github_anchors(RUNBOOKS.read_text())
    missing = [n for n in sorted(ALERTS) if n.lower() not in anchors]
    assert not missing, f"docs/runbooks.md lacks sections for {missing}"
    for rule in ALERTS.values():
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors


def test_severities_all_used():
    assert {r["labels"]["severity"] for r in ALERTS.values()} == {"critical", "warning", "info"}


# --------------------------------------------------------------------------- promtool unit tests


def alert_test_file(name: str) -> Path:
    return PROMTOOL_DIR / f"{name}.yaml"


def test_every_alert_has_a_unit_test_file_and_no_orphans():
    files = {p.stem for p in PROMTOOL_DIR.glob("*.yaml")} - {RECORDING_TESTS.stem}
    assert files == set(ALERTS), f"missing: {set(ALERTS) - files}; orphans: {files - set(ALERTS)}"


def _cases(test_file: Path, name: str) -> list[dict]:
    return [
        c | {"_group": i}
        for i, g in enumerate(load(test_file)["tests"])
        for c in g.get("alert_rule_test", [])
        if c["alertname"] == name
    ]


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_unit_tests_pass(name):
    path = alert_test_file(name)
    r = promtool("test", "rules", path.name, cwd=PROMTOOL_DIR)
    assert r.returncode == 0, f"{name}:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_alert_unit_test_covers_before_and_after_for(name):
    """Not firing before its for:, firing after, with exact labels and annotations."""
    cases = _cases(alert_test_file(name), name)
    firing = [c for c in cases if c.get("exp_alerts")]
    quiet = [c for c in cases if not c.get("exp_alerts")]
    assert firing and quiet, f"{name}: needs a case that fires and a case that does not"
    first_fire = min(duration_s(c["eval_time"]) for c in firing)
    assert any(duration_s(c["eval_time"]) < first_fire for c in quiet), (
        f"{name}: no 'not firing yet' case before the first firing one"
    )
    for c in firing:
        for a in c["exp_alerts"]:
            assert a["exp_labels"]["severity"] == ALERTS[name]["labels"]["severity"]
            assert ("instance" in a["exp_labels"]) != (name in FLEET_WIDE)
            assert set(a["exp_annotations"]) == {"summary", "description", "runbook_url"}
            assert "{{" not in "".join(a["exp_annotations"].values()), "templates must be expanded"


@pytest.mark.parametrize("name", sorted(ALERTS))
def test_quiet_case_is_held_back_by_for(name, tmp_path):
    """Mutation check: with this alert's for: set to 0, its last 'not firing
    yet' case before the first firing one must fail -- so that case really sits
    inside the for: window rather than before the condition was true."""
    src = alert_test_file(name)
    spec = load(src)
    cases = _cases(src, name)
    first_fire = min(duration_s(c["eval_time"]) for c in cases if c.get("exp_alerts"))
    quiet = max(
        (c for c in cases if not c.get("exp_alerts") and duration_s(c["eval_time"]) < first_fire),
        key=lambda c: duration_s(c["eval_time"]),
    )
    group = spec["tests"][quiet["_group"]]
    group["alert_rule_test"] = [{k: v for k, v in quiet.items() if k != "_group"}]
    spec["tests"] = [group]

    rule_files = []
    for rf in spec["rule_files"]:
        p = (PROMTOOL_DIR / rf).resolve()
        data = load(p)
        for g in data["groups"]:
            for rule in g["rules"]:
                if rule.get("alert") == name:
                    rule["for"] = "0s"
        out = tmp_path / p.name
        out.write_text(yaml.safe_dump(data, sort_keys=False))
        rule_files.append(str(out))
    spec["rule_files"] = rule_files
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    r = promtool("test", "rules", "t.yaml", cwd=tmp_path)
    assert r.returncode != 0 and name in r.stdout + r.stderr, (
        f"{name} at {quiet['eval_time']} is quiet even without for: -- the case does not test for:\n{r.stdout}{r.stderr}"
    )


# --------------------------------------------------------------------------- recording rules


def test_recording_rule_names_follow_level_metric_operation():
    assert len(RECORDS) == len(set(RECORDS))
    for name in RECORDS:
        level, metric, operation = name.split(":")
        assert level in ("instance_node", "instance", "cluster"), name
        assert metric.startswith("memhp_"), name
        assert re.fullmatch(r"[a-z0-9_]+", operation), name


def test_every_recording_rule_has_an_expression_test():
    tested = {c["expr"] for g in load(RECORDING_TESTS)["tests"] for c in g.get("promql_expr_test", [])}
    missing = [r for r in RECORDS if r not in tested]
    assert not missing, f"recording rules without a promql_expr_test: {missing}"
    for g in load(RECORDING_TESTS)["tests"]:
        for c in g["promql_expr_test"]:
            assert c["exp_samples"], f"{c['expr']}: an expression test must expect samples"


def test_recording_rules_unit_tests_pass():
    r = promtool("test", "rules", RECORDING_TESTS.name, cwd=PROMTOOL_DIR)
    assert r.returncode == 0, r.stdout + r.stderr
