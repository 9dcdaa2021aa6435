"""Dashboards type-checked against Grafana's own generated TypeScript types.

No Grafana server can run here, but Grafana publishes its dashboard schema as
TypeScript: ``@grafana/schema`` (the kinds Grafana itself is built from) and
``@grafana/grafana-foundation-sdk`` (the generated SDK types, which also carry
the Prometheus query). Both are pinned in ``tests/dashboards/schema/package.json``
and installed by ``scripts/setup.sh`` (``npm ci``) with TypeScript.

Importing a dashboard JSON file straight into TypeScript does not work: JSON
imports widen every string to ``string``, which no enum accepts. Instead each
panel, target, template variable and annotation becomes its own ``.ts``
constant, written as a literal and typed with the matching Grafana type
(``schema/types.ts``), so ``tsc --noEmit`` reports every unknown key, wrong
value or missing field against the element it belongs to.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
NODE_MODULES = SCHEMA_DIR / "node_modules"
TSC = NODE_MODULES / "typescript" / "bin" / "tsc"

# Grafana panel type -> (package folder of its config, @grafana/schema's type-file prefix,
# whether the plugin has a custom field config). A panel type not listed fails the check.
PANEL_TYPES: dict[str, tuple[str, str, bool]] = {
    "timeseries": ("timeseries", "TimeSeries", True),
    "stat": ("stat", "Stat", False),
    "table": ("table", "Table", True),
    "state-timeline": ("statetimeline", "StateTimeline", True),
    "status-history": ("statushistory", "StatusHistory", True),
    "bargauge": ("bargauge", "BarGauge", False),
    "gauge": ("gauge", "Gauge", False),
    "heatmap": ("heatmap", "Heatmap", True),
    "text": ("text", "Text", False),
    "barchart": ("barchart", "BarChart", True),
    "piechart": ("piechart", "PieChart", True),
    "histogram": ("histogram", "Histogram", True),
    "xychart": ("xychart", "XYChart", True),
    "trend": ("trend", "Trend", True),
}

# The two sources, each in its own set of files (a TypeScript namespace in types.ts).
SCHEMAS = {
    "grafana-schema": (
        "GrafanaSchema",
        "@grafana/schema/dist/esm/raw/composable/{folder}/panelcfg/x/{prefix}PanelCfg_types.gen",
    ),
    "foundation-sdk": ("Foundation", "@grafana/grafana-foundation-sdk/{folder}"),
}


@dataclass(frozen=True)
class Element:
    """One constant of a generated file: where it came from and its lines."""

    dashboard: str
    what: str  # "panel 12 'Blocks by state'", "target B of panel 12 ...", "variable instance", ...
    first: int
    last: int


@dataclass(frozen=True)
class Finding:
    schema: str
    dashboard: str
    what: str
    message: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.what} [{self.schema}]: {self.message}"


def _ident(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"


def _elements(dash: dict) -> Iterator[tuple[str, str, str, dict]]:
    """(what, const name, type expression, value) for every checked element of a dashboard."""
    top = {k: v for k, v in dash.items() if k not in ("panels", "templating", "annotations")}
    yield "dashboard", "dashboard", "T.Dashboard", top

    def walk(panels: list[dict]) -> Iterator[tuple[str, str, str, dict]]:
        for p in panels:
            label = f"panel {p.get('id')} {p.get('title', '')!r}"
            ident = f"panel_{_ident(str(p.get('id')))}"
            body = {k: v for k, v in p.items() if k not in ("targets", "panels")}
            kind = p.get("type")
            if kind == "row":
                yield label, ident, "T.Row", body
                yield from walk(p.get("panels", []))
                continue
            if kind not in PANEL_TYPES:
                raise ValueError(f"{label}: panel type {kind!r} has no Grafana type mapped in schema_check.PANEL_TYPES")
            folder, _, has_custom = PANEL_TYPES[kind]
            alias = f"P_{_ident(folder)}"
            custom = f"{alias}.FieldConfig" if has_custom else "NoCustom"
            yield label, ident, f"T.Panel<{alias}.Options, {custom}>", body
            for i, t in enumerate(p.get("targets", [])):
                ref = t.get("refId", str(i))
                yield f"target {ref} of {label}", f"{ident}_target_{_ident(ref)}_{i}", "T.Target", t

    yield from walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        name = v.get("name", "?")
        yield f"variable {name}", f"variable_{_ident(name)}", "T.Variable", v
    for i, a in enumerate(dash.get("annotations", {}).get("list", [])):
        name = a.get("name", "?")
        yield f"annotation {name!r}", f"annotation_{i}_{_ident(name)}", "T.Annotation", a


def render(name: str, dash: dict, schema: str) -> tuple[str, list[Element]]:
    """The .ts source checking dashboard NAME against SCHEMA, and which lines hold which element."""
    namespace, module = SCHEMAS[schema]
    used = sorted({p["type"] for p in _all_panels(dash.get("panels", [])) if p.get("type") in PANEL_TYPES})
    lines = [
        f"// Generated by tests/dashboards/schema_check.py from dashboards/{name}; checked with tsc --noEmit.",
        f"import type {{ {namespace} as T, NoCustom }} from './types';",
    ]
    for kind in used:
        folder, prefix, _ = PANEL_TYPES[kind]
        lines.append(f"import type * as P_{_ident(folder)} from '{module.format(folder=folder, prefix=prefix)}';")
    elements: list[Element] = []
    for what, ident, type_expr, value in _elements(dash):
        body = json.dumps(value, indent=2, ensure_ascii=False).splitlines()
        first = len(lines) + 1
        lines.append(f"export const {ident}: {type_expr} = {body[0]}")
        lines.extend(body[1:])
        lines[-1] += ";"
        elements.append(Element(name, what, first, len(lines)))
    return "\n".join(lines) + "\n", elements


def _all_panels(panels: list[dict]) -> Iterator[dict]:
    for p in panels:
        yield p
        yield from _all_panels(p.get("panels", []))


_ERROR = re.compile(r"^(?P<file>[^()\s]+)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$")


def check(dashboards: dict[str, dict], workdir: Path, *, node: str = "node", timeout: float = 300) -> list[Finding]:
    """Type-check every dashboard against both schemas; [] when all pass.

    Raises RuntimeError when tsc itself cannot run (not installed, crashed) or
    reports an error that belongs to no dashboard element (a broken types.ts)."""
    if not TSC.exists():
        raise RuntimeError(f"{TSC} is missing: scripts/setup.sh installs it (npm ci in {SCHEMA_DIR})")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "node_modules").unlink(missing_ok=True)
    (workdir / "node_modules").symlink_to(NODE_MODULES)
    (workdir / "types.ts").write_text((SCHEMA_DIR / "types.ts").read_text())
    files: dict[str, tuple[str, list[Element]]] = {}
    sources: dict[str, list[str]] = {}
    for name, dash in sorted(dashboards.items()):
        for schema in SCHEMAS:
            ts_name = f"{_ident(name.removesuffix('.json'))}.{_ident(schema)}.ts"
            text, elements = render(name, dash, schema)
            (workdir / ts_name).write_text(text)
            files[ts_name] = (schema, elements)
            sources[ts_name] = text.splitlines()
    config = json.loads((SCHEMA_DIR / "tsconfig.json").read_text())
    config["files"] = ["types.ts", *sorted(files)]
    (workdir / "tsconfig.json").write_text(json.dumps(config, indent=2))
    r = subprocess.run(
        [node, str(TSC), "--noEmit", "--pretty", "false", "-p", str(workdir / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir,
    )
    findings: list[Finding] = []
    stray: list[str] = []
    current: Finding | None = None
    for line in r.stdout.splitlines():
        m = _ERROR.match(line)
        if not m:
            if current is not None and line.startswith(" "):  # tsc's elaboration of the last error
                findings[-1] = current = Finding(
                    current.schema, current.dashboard, current.what, current.message + "\n" + line
                )
            elif line.strip():
                stray.append(line)
            continue
        entry = files.get(Path(m["file"]).name)
        element = None
        if entry is not None:
            element = next((e for e in entry[1] if e.first <= int(m["line"]) <= e.last), None)
        if entry is None or element is None:
            stray.append(line)
            current = None
            continue
        # The JSON line tsc points at names the key even when the message does not.
        at = sources[Path(m["file"]).name][int(m["line"]) - 1].strip().rstrip(",")
        current = Finding(entry[0], element.dashboard, element.what, f"{m['code']}: {m['msg']} (at {at})")
        findings.append(current)
    if stray or (r.returncode != 0 and not findings):
        raise RuntimeError(
            f"tsc exited {r.returncode} with errors outside the dashboards:\n" + "\n".join(stray) + r.stderr
        )
    if r.returncode == 0 and findings:
        raise RuntimeError("tsc reported errors but exited 0")
    return findings
