"""The PrometheusRule is generated from alerts/ and does not drift from it."""

from __future__ import annotations

import subprocess
import sys

import yaml

from deploy.generate import ALERTS, OUTPUT, render, rule_files
from tests.helpers.deploy import REPO, load_all, tool


def test_committed_prometheusrule_is_what_the_generator_produces():
    assert OUTPUT.read_text(encoding="utf-8") == render(), (
        "deploy/kubernetes/prometheusrule.yaml is stale: run .venv/bin/python -m deploy.generate"
    )
    r = subprocess.run([sys.executable, str(REPO / "deploy/generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_rules_are_exactly_the_rules_in_alerts():
    files = rule_files()
    assert files, "alerts/ has no rule files"
    docs = load_all(OUTPUT)
    assert len(docs) == len(files)
    for (path, data), doc in zip(files, docs):
        assert doc["metadata"]["annotations"]["memhp.io/source"] == f"alerts/{path.name}"
        # Semantically: the same groups, rules, expressions, labels, annotations, in the same order.
        assert doc["spec"]["groups"] == data["groups"]
        # And every rule's text: each expr string is byte-for-byte the one in alerts/.
        mine = [r for g in doc["spec"]["groups"] for r in g["rules"]]
        theirs = [r for g in data["groups"] for r in g["rules"]]
        assert [r["expr"] for r in mine] == [r["expr"] for r in theirs]
    # Every rule file in alerts/ is covered, and nothing else is a rule file there.
    for path in sorted({*ALERTS.glob("*.yml"), *ALERTS.glob("*.yaml")}):
        d = yaml.safe_load(path.read_text())
        assert (path, d) in files or not (isinstance(d, dict) and "groups" in d)


def test_generated_rules_pass_promtool(tmp_path):
    for i, doc in enumerate(load_all(OUTPUT)):
        f = tmp_path / f"{i}.yml"
        f.write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
        r = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_drift_is_detected(tmp_path):
    alerts = tmp_path / "alerts"
    alerts.mkdir()
    for path, _ in rule_files():
        (alerts / path.name).write_text(path.read_text())
    (alerts / "thresholds.yaml").write_text("not: rules\n")
    assert render(alerts) == render()
    path, data = rule_files(alerts)[0]
    data["groups"][0]["rules"][0]["expr"] += " > 0"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert render(alerts) != render()
