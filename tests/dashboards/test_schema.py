"""Every committed dashboard type-checks against Grafana's own generated types,
@grafana/schema and @grafana/grafana-foundation-sdk, with tsc (schema_check.py);
and the check is not vacuous: a dashboard with typical mistakes fails it, each
mistake reported against the element that has it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from .schema_check import PANEL_TYPES, SCHEMA_DIR, SCHEMAS, check

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}


def test_installed_types_are_the_pinned_ones():
    pins = json.loads((SCHEMA_DIR / "package.json").read_text())["devDependencies"]
    for name, version in pins.items():
        installed = SCHEMA_DIR / "node_modules" / name / "package.json"
        assert installed.exists(), f"{name} is not installed: scripts/setup.sh runs npm ci in {SCHEMA_DIR}"
        assert json.loads(installed.read_text())["version"].lstrip("v") == version, name


def test_committed_dashboards_match_grafana_schema(tmp_path):
    assert DASHBOARDS
    findings = check(DASHBOARDS, tmp_path)
    assert not findings, "\n".join(map(str, findings))


def _panel(dash: dict, kind: str) -> dict:
    return next(p for p in dash["panels"] if p["type"] == kind)


def test_a_broken_dashboard_fails_the_check(tmp_path):
    bad = copy.deepcopy(DASHBOARDS["memhp-node.json"])
    ts = _panel(bad, "timeseries")
    ts["fieldConfig"]["defaults"]["custom"]["drawStyle"] = "dots"  # not a draw style
    ts["targets"][0]["legendFromat"] = "{{node}}"  # misspelt key in a Prometheus target
    table = _panel(bad, "table")
    table["options"]["footer"] = {"show": False}  # legacy table option
    stat = _panel(bad, "stat")
    stat["options"]["colorMode"] = 1  # wrong type
    instance = next(v for v in bad["templating"]["list"] if v["name"] == "instance")
    instance["definition"] = instance["query"]["query"]  # legacy variable key
    anno = next(a for a in bad["annotations"]["list"] if not a.get("builtIn"))
    anno["expr"] = anno["target"]["expr"]  # the query at the top level, not in target
    bad["refresh_interval"] = "30s"  # unknown dashboard key

    findings = check({"broken.json": bad}, tmp_path)
    got = {(f.schema, f.what) for f in findings}
    text = "\n".join(map(str, findings))

    def reported(what: str, needle: str, schemas=tuple(SCHEMAS)) -> None:
        for schema in schemas:
            hits = [f for f in findings if f.schema == schema and f.what == what and needle in f.message]
            assert hits, f"{needle!r} in {what} not reported against {schema}:\n{text}"

    ts_label = f"panel {ts['id']} {ts['title']!r}"
    reported(ts_label, "dots")
    reported(f"target {ts['targets'][0]['refId']} of {ts_label}", "legendFromat")
    reported(f"panel {table['id']} {table['title']!r}", "footer", ["grafana-schema"])
    reported(f"panel {stat['id']} {stat['title']!r}", "colorMode")
    reported("variable instance", "definition", ["grafana-schema"])
    reported(f"annotation {anno['name']!r}", "expr", ["grafana-schema"])
    reported("dashboard", "refresh_interval")
    # Nothing else: the elements left alone stay clean.
    expected_elements = {
        ts_label,
        f"target {ts['targets'][0]['refId']} of {ts_label}",
        f"panel {table['id']} {table['title']!r}",
        f"panel {stat['id']} {stat['title']!r}",
        "variable instance",
        f"annotation {anno['name']!r}",
        "dashboard",
    }
    assert {what for _, what in got} <= expected_elements, text


def test_a_panel_type_without_grafana_types_is_refused(tmp_path):
    bad = copy.deepcopy(DASHBOARDS["memhp-fleet.json"])
    _panel(bad, "stat")["type"] = "memhp-custom-panel"
    with pytest.raises(ValueError, match="memhp-custom-panel"):
        check({"broken.json": bad}, tmp_path)


def test_every_mapped_panel_type_resolves_to_grafana_types(tmp_path):
    """PANEL_TYPES names real modules and types in both packages: a panel of each
    type, with a known option set, checks clean (a wrong module path or type name
    would be a tsc error outside the dashboard and raise)."""
    dash = {
        "title": "every panel type",
        "schemaVersion": 39,
        "panels": [
            {"id": i, "type": kind, "title": kind, "gridPos": {"h": 4, "w": 4, "x": 0, "y": 4 * i}, "options": {}}
            for i, kind in enumerate(sorted(PANEL_TYPES), start=1)
        ],
    }
    assert check({"all-types.json": dash}, tmp_path) == []
    dash["panels"][0]["options"] = {"noSuchOption": True}
    findings = check({"all-types.json": dash}, tmp_path)
    assert [f.what for f in findings] == [f"panel 1 {sorted(PANEL_TYPES)[0]!r}"] * len(SCHEMAS), findings
