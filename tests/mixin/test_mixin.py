"""The monitoring mixin (mixin/mixin.libsonnet), evaluated by jsonnet (the
``jsonnet`` package from PyPI, Google's C++ implementation) as kube-prometheus
and mixtool evaluate it: from a copy of mixin/ alone, as jsonnet-bundler
vendors it. Its three fields must equal the committed rule files and
dashboards, which the generators write in the same run as the mixin's data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import _jsonnet
import pytest
import yaml

from alerts import generate
from dashboards import build

REPO = Path(__file__).resolve().parents[2]
MIXIN = REPO / "mixin"
FIELDS = "{alerts: m.prometheusAlerts, rules: m.prometheusRules, dashboards: m.grafanaDashboards}"


def evaluate(snippet: str, jpath: Path) -> dict:
    return json.loads(_jsonnet.evaluate_snippet("test", snippet, jpathdir=[str(jpath)]))


@pytest.fixture(scope="module")
def vendored(tmp_path_factory) -> Path:
    """mixin/ copied alone, under the name jsonnet-bundler gives a vendored subdirectory."""
    vendor = tmp_path_factory.mktemp("vendor")
    shutil.copytree(MIXIN, vendor / "github.com" / "memhp" / "memhp" / "mixin")
    return vendor


@pytest.fixture(scope="module")
def mixin(vendored) -> dict:
    return evaluate(f"local m = import 'github.com/memhp/memhp/mixin/mixin.libsonnet'; {FIELDS}", vendored)


def test_alerts_and_rules_equal_the_committed_rule_files(mixin):
    assert mixin["alerts"] == yaml.safe_load((REPO / "alerts" / generate.ALERTS_FILE).read_text())
    assert mixin["rules"] == yaml.safe_load((REPO / "alerts" / generate.RULES_FILE).read_text())
    assert [r["alert"] for g in mixin["alerts"]["groups"] for r in g["rules"]]  # not vacuous


def test_dashboards_equal_the_committed_dashboards(mixin):
    committed = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}
    assert committed and mixin["dashboards"] == committed


def test_the_mixin_data_is_what_the_generators_write():
    """Both generators' --check cover the mixin's copy: a rule or dashboard changed without the
    mixin following fails here, with the command to run."""
    for path, text in (generate.mixin_files(generate.render()) | build.mixin_files(build.render())).items():
        assert path.read_text() == text, f"{path.relative_to(REPO)} is stale: run the generators (docs/alerts.md)"
    listed = {p.name for p in (MIXIN / "generated" / "dashboards").glob("*.json")}
    assert listed == {p.name for p in (REPO / "dashboards").glob("*.json")}, "a stale dashboard in the mixin"


def test_a_stale_mixin_fails_the_check(tmp_path):
    from memhp.generated import sync

    fresh = generate.mixin_files(generate.render(), repo=tmp_path) | build.mixin_files(build.render(), repo=tmp_path)
    assert sync(fresh, check=False, command="x") == 0
    assert sync(fresh, check=True, command="x") == 0
    alerts = tmp_path / "mixin" / "generated" / "alerts.json"
    alerts.write_text(alerts.read_text().replace("MemhpBlocksLeftOffline", "MemhpSomethingElse"))
    assert sync(fresh, check=True, command="x") == 1


def test_kube_prometheus_add_mixin_gives_the_rules_of_deploy_kubernetes(vendored):
    """What kube-prometheus' addMixin puts in its PrometheusRule (the alerts' groups, then the
    rules'), written out here, holds exactly the groups of deploy/kubernetes/prometheusrule.yaml."""
    spec = evaluate(
        "local m = import 'github.com/memhp/memhp/mixin/mixin.libsonnet';"
        "{groups: m.prometheusAlerts.groups + m.prometheusRules.groups}",
        vendored,
    )
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "prometheusrule.yaml").read_text()))
    groups = [g for d in docs if d and d.get("kind") == "PrometheusRule" for g in d["spec"]["groups"]]
    key = lambda g: g["name"]  # noqa: E731
    assert sorted(spec["groups"], key=key) == sorted(groups, key=key)


def test_the_mixin_composes_with_another_one(vendored):
    """groups+ and the hidden fields: a second mixin's groups and dashboards add to memhp's."""
    out = evaluate(
        "local m = (import 'github.com/memhp/memhp/mixin/mixin.libsonnet') + {"
        "  prometheusAlerts+:: {groups+: [{name: 'other', rules: []}]},"
        "  grafanaDashboards+:: {'other.json': {uid: 'other'}},"
        "};"
        "{visible: std.objectFields(m), groups: [g.name for g in m.prometheusAlerts.groups],"
        " dashboards: std.objectFields(m.grafanaDashboards)}",
        vendored,
    )
    assert out["visible"] == [], "the mixin's fields must be hidden (::), as kube-prometheus expects"
    assert out["groups"][-1] == "other" and "memhp.blocks" in out["groups"]
    assert set(out["dashboards"]) == {"memhp-fleet.json", "memhp-node.json", "other.json"}


def test_the_mixin_imports_nothing_outside_its_folder(tmp_path):
    """Evaluated from a copy of mixin/ alone (no repo around it): an import of ../alerts would fail."""
    shutil.copytree(MIXIN, tmp_path / "mixin")
    out = evaluate(f"local m = import 'mixin/mixin.libsonnet'; {FIELDS}", tmp_path)
    assert set(out) == {"alerts", "rules", "dashboards"}
    manifest = json.loads((MIXIN / "jsonnetfile.json").read_text())
    assert manifest["version"] == 1 and manifest["dependencies"] == []
