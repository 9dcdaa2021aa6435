#!/usr/bin/env python3
"""Build memhp's Grafana dashboards as code.

    .venv/bin/python dashboards/build.py           # rewrite dashboards/*.json and the mixin's copy
    .venv/bin/python dashboards/build.py --check   # exit 1 if a committed file differs

Plain Python dicts with a few builders and shared defaults (see
dashboards/README.md for why not grafana-foundation-sdk).  Output is
``json.dumps(..., sort_keys=True, indent=2)`` plus a newline, so a rebuild is
byte-identical and diffs are reviewable.

Every query filters on ``instance=~"$instance"`` (and the node view on
``node=~"$node"``); the datasource is the ``$datasource`` variable.  Alert
thresholds drawn on panels, and the runbook links, come from
memhp/thresholds.yaml, so the lines a human sees are the ones the alerts use
and the links lead where the alerts' runbook_url does.

The fleet view's per-node and per-host panels draw ``$k`` series (``topk``),
so they stay readable at 10,000 hosts, and link each series to the node view
(data links).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from memhp.generated import MIXIN_DATA, sync
from memhp.thresholds import load_thresholds, runbook_base, runbook_url

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
THRESHOLDS = load_thresholds()
DS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39  # Grafana 10.4 / 11
GRID_WIDTH = 24
INSTANCE = 'instance=~"$instance"'
NODE = 'node=~"$node"'
EXPORTER_SEL = THRESHOLDS["selectors"]["exporter"]
CONTROLLER_SEL = THRESHOLDS["selectors"]["controller"]
RATIO_WARN = THRESHOLDS["movable_kernel_ratio"]["warning"]
RATIO_CRIT = THRESHOLDS["movable_kernel_ratio"]["critical"]
GOING_OFFLINE_S = THRESHOLDS["going_offline"]["seconds"]
KZ = THRESHOLDS["kernel_zones_low"]
RUNBOOKS = runbook_base(THRESHOLDS)
NODE_UID = "memhp-node"
K = "$k"  # the fleet view's series budget per panel (k_variable)
K_CHOICES = ("5", "10", "20", "50", "100")
K_DEFAULT = "10"


# --------------------------------------------------------------------------- builders


def target(expr: str, legend: str = "", *, instant: bool = False, fmt: str = "time_series") -> dict:
    return {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "format": fmt,
        "instant": instant,
        "legendFormat": legend or "__auto",
        "range": not instant,
    }


def thresholds(*steps: tuple[float | None, str]) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[dict],
    *,
    w: int = 12,
    h: int = 8,
    unit: str = "short",
    defaults: dict | None = None,
    options: dict | None = None,
    overrides: list[dict] | None = None,
    links: list[dict] | None = None,
) -> dict:
    fd: dict[str, Any] = {"unit": unit, "thresholds": thresholds((None, "green")), "mappings": []}
    fd.update(defaults or {})
    if links:
        fd["links"] = links
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [t | {"refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "fieldConfig": {"defaults": fd, "overrides": overrides or []},
        "options": options or {},
        "gridPos": {"w": w, "h": h},
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict],
    *,
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    threshold_lines: dict | None = None,
    w: int = 12,
    h: int = 8,
    overrides: list[dict] | None = None,
    min_: float | None = None,
    links: list[dict] | None = None,
) -> dict:
    custom: dict[str, Any] = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 30 if (stack or bars) else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "line" if threshold_lines else "off"},
    }
    defaults: dict[str, Any] = {"custom": custom, "color": {"mode": "palette-classic"}}
    if threshold_lines:
        defaults["thresholds"] = threshold_lines
    if min_ is not None:
        defaults["min"] = min_
    options = {
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "calcs": ["lastNotNull", "max"]},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        description,
        targets,
        unit=unit,
        defaults=defaults,
        options=options,
        w=w,
        h=h,
        overrides=overrides,
        links=links,
    )


def stat(
    title: str,
    description: str,
    targets: list[dict],
    *,
    unit: str = "short",
    w: int = 4,
    h: int = 4,
    steps: dict | None = None,
    mappings: list[dict] | None = None,
    no_value: str | None = None,
    text_mode: str = "value",
    decimals: int | None = None,
    links: list[dict] | None = None,
) -> dict:
    defaults: dict[str, Any] = {"color": {"mode": "thresholds"}}
    if steps:
        defaults["thresholds"] = steps
    if mappings:
        defaults["mappings"] = mappings
    if no_value is not None:
        defaults["noValue"] = no_value
    if decimals is not None:
        defaults["decimals"] = decimals
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "none",
        "textMode": text_mode,
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return panel(
        "stat", title, description, targets, unit=unit, defaults=defaults, options=options, w=w, h=h, links=links
    )


def state_timeline(
    title: str, description: str, targets: list[dict], mappings: list[dict], *, w: int = 24, h: int = 10
) -> dict:
    defaults = {
        "color": {"mode": "thresholds"},
        "mappings": mappings,
        # No spanNulls: not a state-timeline field in Grafana's schema (@grafana/schema 13).
        "custom": {"fillOpacity": 80, "lineWidth": 0},
    }
    options = {
        "showValue": "never",
        "rowHeight": 0.9,
        "mergeValues": True,
        "alignValue": "left",
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("state-timeline", title, description, targets, defaults=defaults, options=options, w=w, h=h)


def table(
    title: str,
    description: str,
    targets: list[dict],
    *,
    w: int = 12,
    h: int = 8,
    exclude: tuple[str, ...] = ("Time", "__name__", "job"),
) -> dict:
    p = panel(
        "table",
        title,
        description,
        targets,
        w=w,
        h=h,
        # No options.footer: not a table option in Grafana 13's schema (the footer is off by default).
        options={"showHeader": True, "cellHeight": "sm"},
    )
    p["transformations"] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": dict.fromkeys(exclude, True)}},
    ]
    return p


def value_map(mapping: dict[int, tuple[str, str]]) -> list[dict]:
    return [
        {
            "type": "value",
            "options": {
                str(k): {"text": text, "color": color, "index": i}
                for i, (k, (text, color)) in enumerate(sorted(mapping.items()))
            },
        }
    ]


def runbook_links(*alerts: str) -> list[dict]:
    """Data links to the runbook sections of ``alerts``, the URLs of their runbook_url annotations."""
    return [{"title": f"Runbook: {a}", "url": runbook_url(a, RUNBOOKS), "targetBlank": True} for a in alerts]


def node_view_link(*, node: bool) -> dict:
    """Data link from a series to the node view of its host (and NUMA node), same data source and time range.

    Grafana fills ``${__field.labels.X}`` from the clicked series: the panel's
    query must keep ``instance`` (and ``node``), which the tests check against
    real query results.
    """
    params = ["${datasource:queryparam}", "var-instance=${__field.labels.instance}"]
    title = "Node view of ${__field.labels.instance}"
    if node:
        params.append("var-node=${__field.labels.node}")
        title += " node ${__field.labels.node}"
    params.append("${__url_time_range}")
    return {"title": title, "url": f"/d/{NODE_UID}/memhp-node?" + "&".join(params), "targetBlank": False}


def top_at_end(expr: str, rank: str, by: str = "instance, node", *, lowest: bool = False) -> str:
    """``expr`` for the ``$k`` groups (``by``) ranked highest (``lowest``: lowest) by ``rank``.

    ``rank`` must pin its selectors with ``@ end()``: the same k series are
    drawn across the whole range, and the ranking is one instant, which
    stays cheap at 10,000 hosts where a peak over 30d would not (max-samples).
    """
    assert "@ end()" in rank, rank
    fn = "bottomk" if lowest else "topk"
    return f"{expr}\n  and on ({by})\n{fn}({K}, {rank})"


def top_each_step(expr: str, *, lowest: bool = False) -> str:
    """``expr`` for the ``$k`` series ranked highest (``lowest``: lowest) at each step: for rates, whose
    peaks come and go, so a fixed set would hide the host that failed an hour ago."""
    return f"{'bottomk' if lowest else 'topk'}({K}, {expr})"


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": GRID_WIDTH, "h": 1}}


def layout(items: list[dict]) -> list[dict]:
    """Place panels left to right, wrapping at 24 columns; rows start a new line."""
    x = y = line_h = 0
    out = []
    for pid, item in enumerate(items, start=1):
        w, h = item["gridPos"]["w"], item["gridPos"]["h"]
        if item["type"] == "row" or x + w > GRID_WIDTH:
            x, y, line_h = 0, y + line_h, 0
        item = dict(item, id=pid, gridPos={"x": x, "y": y, "w": w, "h": h})
        out.append(item)
        x += w
        line_h = max(line_h, h)
        if item["type"] == "row":
            x, y, line_h = 0, y + h, 0
    return out


def datasource_variable() -> dict:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
        "includeAll": False,
        "multi": False,
        "skipUrlSync": False,
    }


def query_variable(name: str, label: str, query: str, *, multi: bool, include_all: bool) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        # No "definition" (not in Grafana's variable schema): the query itself is in "query".
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
        "refresh": 2,
        "sort": 3,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "hide": 0,
        "regex": "",
        "options": [],
        "skipUrlSync": False,
    }


def k_variable() -> dict:
    return {
        "name": "k",
        "label": "Series per panel",
        "description": "How many nodes or hosts the per-node and per-host panels draw (topk/bottomk).",
        "type": "custom",
        "query": ",".join(K_CHOICES),
        "current": {"text": K_DEFAULT, "value": K_DEFAULT},
        "options": [{"text": v, "value": v, "selected": v == K_DEFAULT} for v in K_CHOICES],
        "hide": 0,
        "multi": False,
        "includeAll": False,
        "skipUrlSync": False,
    }


def controller_annotation() -> dict:
    return {
        "name": "Controller actions",
        "datasource": DS,
        "enable": True,
        "hide": False,
        "iconColor": "purple",
        # The query in "target" (Grafana's schema; its Prometheus annotation support moves a
        # top-level expr/step there on load); the event formatting stays at the top level,
        # where that support reads it.
        "target": {
            "datasource": DS,
            "expr": f"sum by (instance, action, result, errno) (increase(memhp_controller_actions_total{{{INSTANCE}}}[2m])) > 0",
            "interval": "1m",
            "refId": "Anno",
        },
        "titleFormat": "memhp-controller {{action}}: {{result}}",
        "textFormat": "{{instance}} errno={{errno}}",
        "tagKeys": "action,result",
        "useValueForTime": False,
    }


def builtin_annotation() -> dict:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(uid: str, title: str, description: str, variables: list[dict], items: list[dict]) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["memhp", "memory-hotplug"],
        "editable": True,
        "graphTooltip": 1,
        "timezone": "browser",
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "title": "memhp dashboards",
                "type": "dashboards",
                "tags": ["memhp"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": [builtin_annotation(), controller_annotation()]},
        "templating": {"list": variables},
        "panels": layout(items),
    }


RATIO_STEPS = thresholds((None, "green"), (RATIO_WARN, "orange"), (RATIO_CRIT, "red"))


# --------------------------------------------------------------------------- fleet overview


def fleet() -> dict:
    i = INSTANCE
    items = [
        row("Fleet capacity"),
        stat(
            "Online memory",
            "Memory in online blocks on the selected hosts (usable by the page allocator).",
            [target(f'sum(instance:memhp_blocks_bytes:sum_by_state{{{i},state="online"}})', instant=True)],
            unit="bytes",
        ),
        stat(
            "Offline memory",
            "Memory in offline blocks: hot-added and not onlined, or offlined and not yet "
            "removed. See runbook MemhpBlocksLeftOffline.",
            [target(f'sum(instance:memhp_blocks_bytes:sum_by_state{{{i},state="offline"}})', instant=True)],
            unit="bytes",
            no_value="0",
            steps=thresholds((None, "green"), (1, "orange")),
            links=runbook_links("MemhpBlocksLeftOffline"),
        ),
        stat(
            "Hot-unpluggable",
            "Memory in online ZONE_MOVABLE blocks: what can be offlined reliably.",
            [target(f"sum(instance:memhp_hot_unpluggable_bytes:sum{{{i}}})", instant=True)],
            unit="bytes",
        ),
        stat(
            "MOVABLE:KERNEL",
            f"ZONE_MOVABLE (+CMA) against kernel zones (-CMA) over the selected hosts; "
            f"{RATIO_WARN}:1 warns, {RATIO_CRIT}:1 is critical (per node, see the panel below).",
            [
                target(
                    f"sum(instance:memhp_node_movable_accounted_bytes:sum{{{i}}}) / "
                    f"sum(instance:memhp_node_kernel_accounted_bytes:sum{{{i}}})",
                    instant=True,
                )
            ],
            steps=RATIO_STEPS,
            decimals=2,
            links=runbook_links("MemhpMovableKernelRatioHigh", "MemhpMovableKernelRatioCritical"),
        ),
        stat(
            "Hosts",
            "Hosts whose memhp exporter is scraped.",
            [target(f"count(memhp_exporter_build_info{{{i}}})", instant=True)],
        ),
        stat(
            "memhp alerts",
            "memhp alerts pending or firing on the selected hosts, by state.",
            [target(f'count by (alertstate) (ALERTS{{alertname=~"Memhp.+",{i}}})', "{{alertstate}}", instant=True)],
            no_value="0",
            text_mode="value_and_name",
            steps=thresholds((None, "orange")),
        ),
        row("Per node"),
        *fleet_per_node(i),
        row("Failures and the controller"),
        *fleet_per_host(i),
    ]
    variables = [
        datasource_variable(),
        query_variable(
            "instance", "Host", "label_values(memhp_exporter_build_info, instance)", multi=True, include_all=True
        ),
        k_variable(),
    ]
    return dashboard(
        "memhp-fleet",
        "memhp / Fleet overview",
        "Memory hot(un)plug across the fleet: capacity per node, MOVABLE:KERNEL, failures and the "
        "remediation controller.",
        variables,
        items,
    )


def fleet_per_node(i: str) -> list[dict]:
    """Per-node panels: $k nodes each, fixed over the range (top_at_end), each series linked to its node."""
    drill = node_view_link(node=True)
    by_state = f"instance_node:memhp_blocks_bytes:sum_by_state{{{i}}}"
    offline = f'instance_node:memhp_blocks_bytes:sum_by_state{{{i},state="offline"}}'
    ratio = f"instance_node:memhp_movable_kernel_ratio:ratio{{{i}}}"
    hot = f"instance_node:memhp_hot_unpluggable_bytes:sum{{{i}}}"
    floor = f"instance_node:memhp_hot_unpluggable_floor_bytes:effective{{{i}}}"
    headroom = f"memhp_node_auto_movable_headroom_bytes{{{i}}}"
    # Nodes furthest below (or least above) their floor, among those with hot-unpluggable memory or a
    # floor: a node with neither has nothing to hot-unplug and nothing planned.
    margin = (
        f"({hot} @ end() - on (instance, node) {floor} @ end())\n"
        f"  and on (instance, node) ({hot} @ end() > 0 or {floor} @ end() > 0)"
    )
    return [
        timeseries(
            f"Online and offline memory per node (top {K} by offline)",
            f"Bytes in online and offline memory blocks per host and NUMA node: the {K} nodes with the most "
            "offline memory at the end of the range (ties: any).",
            [
                target(
                    top_at_end(
                        by_state,
                        f"sum by (instance, node) ({offline} @ end())\n"
                        f"  or sum by (instance, node) (0 * {by_state} @ end())",
                    ),
                    "{{instance}} node {{node}} {{state}}",
                )
            ],
            unit="bytes",
            stack=True,
            min_=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* offline$"},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}],
                }
            ],
            links=[drill, *runbook_links("MemhpBlocksLeftOffline")],
        ),
        timeseries(
            f"MOVABLE:KERNEL per node (top {K})",
            f"Per NUMA node, accounted as the kernel's auto-movable policy does: the {K} highest at the end of "
            f"the range. Lines: {RATIO_WARN}:1 (warning) and {RATIO_CRIT}:1 (critical).",
            [target(top_at_end(ratio, f"{ratio} @ end()"), "{{instance}} node {{node}}")],
            threshold_lines=RATIO_STEPS,
            min_=0,
            links=[drill, *runbook_links("MemhpMovableKernelRatioHigh", "MemhpMovableKernelRatioCritical")],
        ),
        timeseries(
            f"Hot-unpluggable memory per node and planned floor (lowest {K} margins)",
            "Online ZONE_MOVABLE bytes per node, and the planned floor "
            "(instance_node:memhp_hot_unpluggable_floor_bytes:effective; 0 = none planned): the "
            f"{K} nodes closest to (or furthest below) their floor at the end of the range.",
            [
                target(top_at_end(hot, margin, lowest=True), "{{instance}} node {{node}}"),
                target(top_at_end(floor, margin, lowest=True), "{{instance}} node {{node}} floor"),
            ],
            unit="bytes",
            min_=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* floor$"},
                    "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}],
                }
            ],
            links=[drill, *runbook_links("MemhpHotUnpluggableBelowFloor")],
        ),
        timeseries(
            f"Auto-movable headroom per node (lowest {K})",
            "Memory that could still be onlined to ZONE_MOVABLE before auto_movable_ratio is reached: the "
            f"{K} nodes with the least at the end of the range.",
            [
                target(
                    top_at_end(headroom, f"max by (instance, node) ({headroom} @ end())", lowest=True),
                    "{{instance}} node {{node}}",
                )
            ],
            unit="bytes",
            min_=0,
            links=[drill],
        ),
    ]


def fleet_per_host(i: str) -> list[dict]:
    """Per-host panels: the $k highest series at each step (top_each_step), each linked to its host."""
    drill = node_view_link(node=False)
    return [
        timeseries(
            f"Offline failures by reason (top {K})",
            "Failed offline attempts logged by the kernel (memory offlining ... failed due to REASON), "
            f"per second over 5m: the {K} highest at each moment.",
            [
                target(
                    top_each_step(f"instance:memhp_offline_failures:rate5m_by_reason{{{i}}}"),
                    "{{instance}} {{reason}}",
                )
            ],
            unit="cps",
            min_=0,
            links=[drill, *runbook_links("MemhpOfflineFailuresRising")],
        ),
        timeseries(
            f"Controller actions by result (top {K})",
            "Block changes finished by memhp-controller, per second over 5m: ok, already (nothing to do), "
            f"failed; the {K} highest at each moment.",
            [
                target(
                    top_each_step(f"instance:memhp_controller_actions:rate5m_by_action_result{{{i}}}"),
                    "{{instance}} {{action}} {{result}}",
                )
            ],
            unit="cps",
            min_=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* failed$"},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}],
                }
            ],
            links=[drill, *runbook_links("MemhpControllerActionsFailing")],
        ),
        timeseries(
            f"Controller state (top {K})",
            "Quarantined blocks, and whether the controller is paused or in dry-run: for each, the "
            f"{K} hosts highest at each moment.",
            [
                target(top_each_step(f"memhp_controller_quarantined_blocks{{{i}}}"), "{{instance}} quarantined blocks"),
                target(top_each_step(f"memhp_controller_paused{{{i}}}"), "{{instance}} paused"),
                target(top_each_step(f"memhp_controller_dry_run{{{i}}}"), "{{instance}} dry-run"),
            ],
            min_=0,
            links=[drill, *runbook_links("MemhpControllerBlocksQuarantined", "MemhpControllerPaused")],
        ),
        timeseries(
            f"Scrape health (lowest {K})",
            f"Prometheus' up for the memhp exporter and controller jobs: the {K} lowest at each moment (down first).",
            [
                target(top_each_step(f"up{{{EXPORTER_SEL},{i}}}", lowest=True), "{{instance}} exporter"),
                target(top_each_step(f"up{{{CONTROLLER_SEL},{i}}}", lowest=True), "{{instance}} controller"),
            ],
            min_=0,
            links=[drill, *runbook_links("MemhpExporterDown", "MemhpControllerDown")],
        ),
    ]


# --------------------------------------------------------------------------- node view


def node_view() -> dict:
    i, n = INSTANCE, NODE
    inn = f"{i},{n}"
    # The block map is a range view: one row per lsmem-style range (the
    # exporter's default), coded by state or zone; a range's labels change
    # when a block in it changes, so its row ends and new rows begin.
    by_range = "max by (node, first_block, last_block)"
    rng = f"memhp_block_range_blocks{{{inn}"
    states_code = " or ".join(
        f'{by_range} (0 * {rng},state="{st}"}} + {code})'
        for st, code in (("online", 2), ("going-offline", 1), ("offline", 0))
    )
    zones_code = " or ".join(
        f'{by_range} (0 * {rng},zone="{z}"}} + {code})'
        for z, code in (("Movable", 4), ("Normal", 3), ("DMA32", 2), ("DMA", 1), ("none", 0))
    )
    items = [
        row("Configuration"),
        stat(
            "Block size",
            "block_size_bytes: the hot(un)plug granularity.",
            [target(f"memhp_block_size_bytes{{{i}}}", instant=True)],
            unit="bytes",
        ),
        stat(
            "Online policy",
            "memory_hotplug.online_policy (contig-zones or auto-movable).",
            [target(f"memhp_online_policy_info{{{i}}} == 1", "{{policy}}", instant=True)],
            text_mode="name",
            links=runbook_links("MemhpOnlinePolicyChanged"),
        ),
        stat(
            "auto_online_blocks",
            "Default state of hot-added blocks; offline means user space must online them.",
            [target(f"memhp_auto_online_blocks_info{{{i}}} == 1", "{{state}}", instant=True)],
            text_mode="name",
        ),
        stat(
            "auto_movable_ratio",
            "MOVABLE:KERNEL ceiling of the auto-movable policy (3.01 = 301%).",
            [target(f"memhp_auto_movable_max_ratio{{{i}}}", instant=True)],
            decimals=2,
        ),
        stat(
            "crash_hotplug",
            "1: the kernel updates the kdump memory map itself after hotplug. 0 or absent "
            "(older kernels without the file): user space must reload kdump.",
            [target(f"memhp_crash_hotplug{{{i}}} or (absent(memhp_crash_hotplug{{{i}}}) * -1)", instant=True)],
            mappings=value_map(
                {
                    -1: ("absent: reload kdump", "orange"),
                    0: ("0: reload kdump", "orange"),
                    1: ("1: kernel updates kdump", "green"),
                }
            ),
            links=runbook_links("MemhpKdumpReloadNeeded"),
        ),
        stat(
            "Per-block series capped",
            "1 when more blocks are worth a look (or, with --collector.blocks.all, exist) than the limit "
            "in force; the rest are in the ranges and counts only.",
            [target(f"memhp_block_series_capped{{{i}}}", instant=True)],
            mappings=value_map({0: ("no", "green"), 1: ("yes: see ranges", "orange")}),
        ),
        row("Capacity and zones"),
        stat(
            "Offline blocks",
            "Blocks offline on the selected nodes.",
            [target(f'sum(memhp_blocks{{{inn},state="offline"}})', instant=True)],
            no_value="0",
            steps=thresholds((None, "green"), (1, "orange")),
            links=runbook_links("MemhpBlocksLeftOffline"),
        ),
        stat(
            "Unofflinable blocks",
            "Online blocks with valid_zones none (mixed zones, mixed nodes or holes), not counting boot "
            "memory in ZONE_DMA/ZONE_DMA32, which the kernel never offlines (reason=boot_dma).",
            [target(f'sum(memhp_blocks_unofflinable{{{inn},reason="other"}})', instant=True)],
            no_value="0",
            links=runbook_links("MemhpBlocksUnofflinable"),
        ),
        stat(
            "Hot-unpluggable",
            "Online ZONE_MOVABLE memory on the selected nodes.",
            [target(f"sum(instance_node:memhp_hot_unpluggable_bytes:sum{{{inn}}})", instant=True)],
            unit="bytes",
            links=runbook_links("MemhpHotUnpluggableBelowFloor"),
        ),
        stat(
            "MOVABLE:KERNEL (worst node)",
            f"{RATIO_WARN}:1 warns, {RATIO_CRIT}:1 is critical.",
            [target(f"max(instance_node:memhp_movable_kernel_ratio:ratio{{{inn}}})", instant=True)],
            steps=RATIO_STEPS,
            decimals=2,
            links=runbook_links("MemhpMovableKernelRatioHigh", "MemhpMovableKernelRatioCritical"),
        ),
        stat(
            "MemAvailable",
            "The kernel's estimate of memory available without swapping.",
            [target(f"memhp_memory_available_bytes{{{i}}}", instant=True)],
            unit="bytes",
        ),
        stat(
            "MemTotal",
            "Usable RAM: online memory minus reserved.",
            [target(f"memhp_memory_total_bytes{{{i}}}", instant=True)],
            unit="bytes",
        ),
        timeseries(
            "Memory by zone and state",
            "Bytes in memory blocks by zone (for offline blocks: the zone the kernel would pick) and state.",
            [target(f"sum by (node, zone, state) (memhp_blocks_bytes{{{inn}}})", "node {{node}} {{zone}} {{state}}")],
            unit="bytes",
            stack=True,
            min_=0,
        ),
        timeseries(
            "MOVABLE:KERNEL",
            f"Per node, with the {RATIO_WARN}:1 and {RATIO_CRIT}:1 lines.",
            [target(f"instance_node:memhp_movable_kernel_ratio:ratio{{{inn}}}", "node {{node}}")],
            threshold_lines=RATIO_STEPS,
            min_=0,
            links=runbook_links("MemhpMovableKernelRatioHigh", "MemhpMovableKernelRatioCritical"),
        ),
        timeseries(
            "Zone free memory against watermarks",
            "Free memory per populated zone, with its min, low and high watermarks (dashed). Below low "
            "kswapd wakes; below min only atomic/reserve allocations succeed.",
            [
                target(
                    f"memhp_zone_free_bytes{{{inn}}} and on (instance, node, zone) "
                    f"(memhp_zone_populated{{{inn}}} == 1)",
                    "node {{node}} {{zone}} free",
                )
            ]
            + [
                target(
                    f'memhp_zone_watermark_bytes{{{inn},watermark="{wm}"}} and on (instance, node, zone) '
                    f"(memhp_zone_populated{{{inn}}} == 1)",
                    "node {{node}} {{zone}} " + wm,
                )
                for wm in ("min", "low", "high")
            ],
            unit="bytes",
            w=24,
            h=9,
            min_=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* (min|low|high)$"},
                    "properties": [
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [6, 6]}},
                        {"id": "custom.fillOpacity", "value": 0},
                    ],
                }
            ],
        ),
        timeseries(
            "Kernel zones free vs alert line, and free ZONE_MOVABLE",
            f"Kernel zones ({KZ['zones'].replace('|', ', ')}) free against "
            f"{KZ['low_watermark_factor']} x their low watermark (MemhpKernelZonesLowMovableFree), and "
            "ZONE_MOVABLE free, which unmovable allocations cannot use.",
            [
                target(f"instance_node:memhp_kernel_zones_free_bytes:sum{{{inn}}}", "node {{node}} kernel free"),
                target(
                    f"{KZ['low_watermark_factor']} * instance_node:memhp_kernel_zones_low_watermark_bytes:sum{{{inn}}}",
                    "node {{node}} alert line",
                ),
                target(f'memhp_zone_free_bytes{{{inn},zone="Movable"}}', "node {{node}} Movable free"),
            ],
            unit="bytes",
            min_=0,
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* alert line$"},
                    "properties": [
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
                        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                    ],
                }
            ],
            links=runbook_links("MemhpKernelZonesLowMovableFree"),
        ),
        timeseries(
            "Hot-unpluggable and auto-movable headroom",
            "Online ZONE_MOVABLE bytes per node, and what may still be onlined movable under auto_movable_ratio.",
            [
                target(f"instance_node:memhp_hot_unpluggable_bytes:sum{{{inn}}}", "node {{node}} hot-unpluggable"),
                target(f"memhp_node_auto_movable_headroom_bytes{{{inn}}}", "node {{node}} headroom"),
            ],
            unit="bytes",
            min_=0,
        ),
        row("Blocks"),
        state_timeline(
            "Block ranges: state",
            "Every lsmem-style range of blocks (consecutive blocks with the same node, state and zones) "
            "and its state over time.",
            [target(states_code, "node {{node}} blocks {{first_block}}-{{last_block}}")],
            value_map({0: ("offline", "red"), 1: ("going-offline", "orange"), 2: ("online", "green")}),
            h=12,
        ),
        state_timeline(
            "Block ranges: zone",
            "Every range's zone over time: the managing zone of online blocks, the "
            "zone the kernel would pick for offline ones; none = mixed zones/nodes or holes "
            "(cannot be offlined).",
            [target(zones_code, "node {{node}} blocks {{first_block}}-{{last_block}}")],
            value_map(
                {
                    0: ("none", "purple"),
                    1: ("DMA", "blue"),
                    2: ("DMA32", "blue"),
                    3: ("Normal", "yellow"),
                    4: ("Movable", "green"),
                }
            ),
            h=12,
        ),
        timeseries(
            "Blocks going offline",
            f"Seconds each block has been going-offline; MemhpBlockStuckGoingOffline fires past {GOING_OFFLINE_S}s.",
            [target(f"memhp_block_going_offline_seconds{{{inn}}}", "block {{block}}")],
            unit="s",
            threshold_lines=thresholds((None, "green"), (GOING_OFFLINE_S, "red")),
            min_=0,
            links=runbook_links("MemhpBlockStuckGoingOffline"),
        ),
        table(
            "Block ranges",
            "lsmem-style merged ranges of blocks with the same node, zones and state, and their block counts.",
            [target(f"memhp_block_range_blocks{{{inn}}}", instant=True, fmt="table")],
            exclude=("Time", "__name__", "job", "instance"),
        ),
        table(
            "Blocks worth a look",
            "Blocks exported one by one: going-offline, failing to offline, or valid_zones none "
            "(every block with --collector.blocks.all), with their state.",
            [
                target(
                    f"memhp_block_info{{{inn}}} * on (instance, block) group_left (state) "
                    f"(memhp_block_state{{{inn}}} == 1)",
                    instant=True,
                    fmt="table",
                )
            ],
            exclude=("Time", "__name__", "job", "instance", "Value"),
        ),
        row("Events"),
        timeseries(
            "Memory uevents",
            "Memory block uevents seen by the exporter, by action.",
            [target(f"sum by (action) (increase(memhp_uevents_total{{{i}}}[$__rate_interval]))", "{{action}}")],
            bars=True,
            min_=0,
        ),
        timeseries(
            "Offline failures by reason",
            "Failed offline attempts logged by the kernel, by reason.",
            [
                target(
                    f"sum by (reason) (increase(memhp_offline_failures_total{{{i}}}[$__rate_interval]))", "{{reason}}"
                )
            ],
            bars=True,
            min_=0,
            links=runbook_links("MemhpOfflineFailuresRising"),
        ),
        table(
            "Offline failures by block",
            "Failed offline attempts per block and reason since the exporter started.",
            [target(f"sum by (block, reason) (memhp_block_offline_failures_total{{{i}}})", instant=True, fmt="table")],
        ),
        timeseries(
            "Controller actions",
            "Block changes finished by memhp-controller, by action, result and errno.",
            [
                target(
                    f"sum by (action, result, errno) (increase(memhp_controller_actions_total{{{i}}}"
                    f"[$__rate_interval]))",
                    "{{action}} {{result}} {{errno}}",
                )
            ],
            bars=True,
            min_=0,
            links=runbook_links("MemhpControllerActionsFailing"),
        ),
        timeseries(
            "Controller guard refusals",
            "Actions refused by a guard (cooldown, caps, quarantine, pause...).",
            [
                target(
                    f"sum by (guard) (increase(memhp_controller_guard_refusals_total{{{i}}}[$__rate_interval]))",
                    "{{guard}}",
                )
            ],
            bars=True,
            min_=0,
            links=runbook_links("MemhpControllerRateLimited", "MemhpControllerBlocksQuarantined"),
        ),
        timeseries(
            "Alerts received by the controller",
            "By source (webhook, pull) and status.",
            [
                target(
                    f"sum by (source, status) (increase(memhp_controller_alerts_received_total{{{i}}}"
                    f"[$__rate_interval]))",
                    "{{source}} {{status}}",
                )
            ],
            bars=True,
            min_=0,
        ),
        row("Health"),
        timeseries(
            "Scrape health",
            "Prometheus' up for this host's exporter and controller.",
            [target(f"up{{{EXPORTER_SEL},{i}}}", "exporter"), target(f"up{{{CONTROLLER_SEL},{i}}}", "controller")],
            min_=0,
            w=8,
            links=runbook_links("MemhpExporterDown", "MemhpControllerDown"),
        ),
        timeseries(
            "Collector success",
            "1 when the collector finished without an exception.",
            [target(f"memhp_collector_success{{{i}}}", "{{collector}}")],
            min_=0,
            w=8,
            links=runbook_links("MemhpCollectorFailing"),
        ),
        timeseries(
            "Collector duration",
            "Time each collector took in the last scrape.",
            [target(f"memhp_collector_duration_seconds{{{i}}}", "{{collector}}")],
            unit="s",
            min_=0,
            w=8,
        ),
        timeseries(
            "Event sources",
            "1 while the kernel log watcher and the uevent monitor are following.",
            [target(f"memhp_kmsg_watcher_up{{{i}}}", "kmsg"), target(f"memhp_uevent_monitor_up{{{i}}}", "uevent")],
            min_=0,
            w=8,
            links=runbook_links("MemhpEventSourceDown"),
        ),
        timeseries(
            "Parse errors",
            "Files that could not be read or parsed, by file kind.",
            [target(f"sum by (file) (increase(memhp_parse_errors_total{{{i}}}[$__rate_interval]))", "{{file}}")],
            bars=True,
            min_=0,
            w=8,
            links=runbook_links("MemhpParseErrors"),
        ),
        timeseries(
            "Controller queue",
            "Alerts waiting for the controller's worker.",
            [target(f"memhp_controller_queue_depth{{{i}}}", "queue depth")],
            min_=0,
            w=8,
        ),
    ]
    variables = [
        datasource_variable(),
        query_variable(
            "instance", "Host", "label_values(memhp_exporter_build_info, instance)", multi=False, include_all=False
        ),
        query_variable(
            "node", "NUMA node", 'label_values(memhp_blocks{instance=~"$instance"}, node)', multi=True, include_all=True
        ),
    ]
    return dashboard(
        NODE_UID,
        "memhp / Node",
        "One host's memory blocks, zones, watermarks, hotplug events, offline failures, the "
        "controller's actions (annotations) and the exporter's health.",
        variables,
        items,
    )


DASHBOARDS = {"memhp-fleet.json": fleet, "memhp-node.json": node_view}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), sort_keys=True, indent=2) + "\n" for name, build in DASHBOARDS.items()}


def mixin_files(rendered: dict[str, str], repo: Path = REPO) -> dict[Path, str]:
    """The dashboards as mixin/mixin.libsonnet imports them: the same files, and the list of them."""
    data = repo / MIXIN_DATA
    listing = "".join(f"  '{name}': import 'dashboards/{name}',\n" for name in sorted(rendered))
    index = f"// Generated by dashboards/build.py: do not edit by hand.\n{{\n{listing}}}\n"
    return {data / "dashboards.libsonnet": index} | {data / "dashboards" / n: t for n, t in rendered.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build memhp's Grafana dashboards.")
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args(argv)
    rendered = render()
    files = {args.out / name: text for name, text in rendered.items()}
    if args.out == HERE:  # the repo's own dashboards: the mixin's copy moves with them
        files |= mixin_files(rendered)
    return sync(files, check=args.check, command=".venv/bin/python dashboards/build.py")


if __name__ == "__main__":
    sys.exit(main())
