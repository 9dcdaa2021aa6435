"""The dashboards' data links and series budget, read from the committed JSON
(no servers; tests/dashboards/test_dashboards.py runs the same queries and
links against real Prometheus):

* runbook links lead where the alerts' runbook_url leads, from the one base in
  memhp/thresholds.yaml, to sections that exist;
* every fleet panel that draws one series per node or host links each series
  to the node view, with variables the node view has, and draws at most $k
  series (topk/bottomk), $k a variable with a small default.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml

from memhp.thresholds import runbook_base
from tests.alerts.test_rules import github_anchors

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = {p.name: json.loads(p.read_text()) for p in sorted((REPO / "dashboards").glob("*.json"))}
FLEET, NODE = DASHBOARDS["memhp-fleet.json"], DASHBOARDS["memhp-node.json"]
ALERTS = {
    r["alert"]: r
    for f in (REPO / "alerts").glob("*.yaml")
    for g in yaml.safe_load(f.read_text())["groups"]
    for r in g["rules"]
    if "alert" in r
}
FIELD_LABEL = re.compile(r"\$\{__field\.labels\.([a-zA-Z_]+)\}")


def panels(dash: dict) -> list[dict]:
    return [p for p in dash["panels"] if p["type"] != "row"]


def links(panel: dict) -> list[dict]:
    return panel["fieldConfig"]["defaults"].get("links", [])


def per_series(panel: dict) -> bool:
    """A panel drawing one series per host or node: its legends name the host."""
    return panel["type"] == "timeseries" and any("{{instance}}" in t["legendFormat"] for t in panel["targets"])


def variable(dash: dict, name: str) -> dict | None:
    return next((v for v in dash["templating"]["list"] if v["name"] == name), None)


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_runbook_links_are_the_alerts_runbook_urls(name):
    base = runbook_base()
    anchors = github_anchors((REPO / "docs" / "runbooks.md").read_text())
    found = []
    for p in panels(DASHBOARDS[name]):
        for link in links(p):
            if not link["url"].startswith("http"):
                continue
            alert = link["title"].removeprefix("Runbook: ")
            assert alert in ALERTS, f"{p['title']}: a runbook link for an alert that does not exist: {alert}"
            assert link["url"] == ALERTS[alert]["annotations"]["runbook_url"], p["title"]
            assert link["url"].startswith(base + "#") and link["url"].split("#", 1)[1] in anchors
            assert link["targetBlank"] is True
            found.append(alert)
    assert len(set(found)) >= 5, f"{name}: runbook links expected on the panels the alerts are about"


def test_the_runbook_base_is_the_thresholds_file_s():
    t = yaml.safe_load((REPO / "memhp" / "thresholds.yaml").read_text())
    assert runbook_base() == t["runbooks"]["base_url"].rstrip("/")
    for rule in ALERTS.values():
        assert rule["annotations"]["runbook_url"].startswith(runbook_base() + "#")


def test_every_per_series_fleet_panel_drills_down_to_the_node_view():
    node_vars = {v["name"] for v in NODE["templating"]["list"]}
    checked = 0
    for p in filter(per_series, panels(FLEET)):
        drill = [link for link in links(p) if link["url"].startswith("/d/")]
        assert len(drill) == 1, f"{p['title']}: no drill-down link to the node view"
        url = urlsplit(drill[0]["url"])
        assert url.path.split("/")[2] == NODE["uid"], p["title"]
        params = dict(parse_qsl(url.query.replace("${datasource:queryparam}", "var-datasource=x")))
        assert {k.removeprefix("var-") for k in params if k.startswith("var-")} <= node_vars, p["title"]
        assert "${__url_time_range}" in url.query, f"{p['title']}: the link must keep the time range"
        assert params["var-instance"] == "${__field.labels.instance}"
        if all("{{node}}" in t["legendFormat"] for t in p["targets"]):
            assert params["var-node"] == "${__field.labels.node}", f"{p['title']}: a per-node panel links the node"
        checked += 1
    assert checked >= 8


def test_fleet_panels_draw_at_most_k_series():
    k = variable(FLEET, "k")
    assert k and k["type"] == "custom" and not k["multi"] and not k["includeAll"]
    choices = [int(x) for x in k["query"].split(",")]
    assert int(k["current"]["value"]) in choices and int(k["current"]["value"]) <= 20, "a small default"
    assert [o["value"] for o in k["options"]] == k["query"].split(",")
    for p in filter(per_series, panels(FLEET)):
        for t in p["targets"]:
            assert re.search(r"\b(topk|bottomk)\(\$k,", t["expr"]), f"{p['title']} [{t['refId']}] draws every host"
        assert "$k" in p["title"], f"{p['title']}: the title says how many are drawn"


def test_node_view_links_only_use_labels_the_drilled_panels_keep():
    """A ${__field.labels.X} that the panel's series lack makes a link with an empty variable;
    the series' labels are checked against real Prometheus in test_dashboards.py."""
    for p in panels(FLEET):
        for link in links(p):
            for label in FIELD_LABEL.findall(link["url"]):
                for t in p["targets"]:
                    assert "{{" + label + "}}" in t["legendFormat"], (p["title"], label)
