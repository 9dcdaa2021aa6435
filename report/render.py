"""The review as a document (headings, paragraphs, lists, tables, images),
in the order a meeting reads it: the fleet at a glance and the findings by
kind on the first screen, the fleet charts, then the worst nodes and hosts
(capped; the full per-node data is in nodes.csv/nodes.json).  Rendered twice: Markdown (charts as files next to it) and one self-contained
HTML page (charts inlined as data: URIs, inline CSS, no script, no external
resource)."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memhp.promapi import format_duration

from . import thresholds
from .analysis import fmt_bytes, fmt_ratio, risk_label, risk_weights
from .backtest import section as backtest_section
from .forecast import in_words

Inline = str | tuple  # "text" | ("b", text) | ("code", text) | ("link", text, url) | ("sev", level)
Cell = str | list

DOC_LINK = "https://github.com/memhp/memhp/blob/main/docs/capacity-review.md"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _h(n: float | None) -> str:
    return "–" if n is None else f"{n:.1f}"


def _i(n: Any) -> str:
    return "–" if n is None else str(n)


def _anchor(text: str) -> str:
    return "".join(ch for ch in text.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")


def build(r: dict, charts: dict[str, dict]) -> list[tuple]:
    return [
        ("h1", "memhp capacity review"),
        *_header(r["meta"]),
        ("h2", "At a glance"),
        ("ul", [[line] for line in r["summary"]]),
        *_findings(r["findings"]),
        *_previous(r),
        *_fleet(r["fleet"], charts),
        *_trends(r),
        *_nodes(r, charts),
        *_finding_details(r["findings"]),
        *_hosts(r["instances"], r["files"]),
        *_blocks(r["blocks"]),
        *backtest_section(r.get("backtest")),
        *_how_to_read(r["files"]),
    ]


def _header(m: dict) -> list[tuple]:
    sel = m["selector"]
    doc: list[tuple] = [
        (
            "p",
            [
                ("b", "Period:"),
                f" {m['start_iso']} → {m['end_iso']} ({format_duration(m['range_seconds'])}) · ",
                ("b", "Prometheus:"),
                " ",
                ("code", m["prometheus"]),
                " · ",
                ("b", "Selector:"),
                " ",
                ("code", "{" + sel + "}") if sel else "all memhp series",
                " · ",
                ("b", "Resolution:"),
                f" {format_duration(m['step_seconds'])} (event bars: {format_duration(m['event_bucket_seconds'])})"
                f" · fleet curves from {m.get('fleet_curves_source') or 'raw series'}"
                f" · generated {m['generated_at']}",
            ],
        )
    ]
    if m["warnings"]:
        doc.append(("ul", [[("b", "Note:"), " " + w] for w in m["warnings"]]))
    return doc


def _findings(groups: list[dict]) -> list[tuple]:
    if not groups:
        return [
            ("h2", "Findings"),
            (
                "p",
                [
                    f"Nothing to report: no node went above {thresholds.LINES.warning_label}, no offline failed, "
                    "the controller had no failures or quarantined blocks."
                ],
            ),
        ]
    items: list[list] = []
    for g in groups:
        item: list = [("sev", g["severity"]), " " + g["text"] + " "]
        if g["entries"]:
            item += [("link", "details", "#" + _anchor("finding " + g["kind"])), " · "]
        item.append(("link", f"runbook: {g['runbook']}", g["runbook_url"]))
        items.append(item)
    return [("h2", "Findings"), ("ul", items)]


def _fleet(f: dict, charts: dict[str, dict]) -> list[tuple]:
    doc: list[tuple] = [("h2", "Fleet over time")]
    warning = thresholds.LINES.warning_label
    for name, alt in (
        (
            "distribution",
            f"MOVABLE:KERNEL across the fleet: median, 90th percentile and worst node, nodes above {warning}",
        ),
        ("capacity", "Fleet memory by zone (kernel zones, ZONE_MOVABLE, mixed) and offline/going-offline blocks"),
        ("failures", "Offline failures by reason over the period"),
        ("actions", "Controller actions on memory blocks by result"),
    ):
        if name in charts:
            doc.append(("img", name, alt, charts[name]))
    rows = [
        ["memory in online blocks", *_stats(f["online_bytes"], fmt_bytes)],
        ["online kernel zones", *_stats(f["online_kernel_bytes"], fmt_bytes)],
        ["online ZONE_MOVABLE (hot-unpluggable)", *_stats(f["hot_unpluggable_bytes"], fmt_bytes)],
        ["memory in offline blocks", *_stats(f["offline_bytes"], fmt_bytes)],
        ["memory in going-offline blocks", *_stats(f["going_offline_bytes"], fmt_bytes)],
        [
            "auto-movable headroom (ZONE_MOVABLE that can still be onlined)",
            *_stats(f.get("auto_movable_headroom_bytes", {}), fmt_bytes),
        ],
        ["MOVABLE:KERNEL, fleet", *_stats(f["ratio"], fmt_ratio)],
        ["MOVABLE:KERNEL, median node", *_stats(f["ratio_p50"], fmt_ratio)],
        ["MOVABLE:KERNEL, 90th percentile", *_stats(f["ratio_p90"], fmt_ratio)],
        ["MOVABLE:KERNEL, worst node", *_stats(f["ratio_max"], fmt_ratio)],
    ]
    doc.append(("table", ["figure", "end of period", "minimum", "peak"], rows))
    return doc


def _fmt_value(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "ratio":
        return fmt_ratio(v)
    if unit == "bytes":
        return fmt_bytes(v)
    return f"{v:,.0f}"


def _change(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "ratio":
        return f"{v:+.2f}"
    if unit == "bytes":
        return ("+" if v >= 0 else "−") + fmt_bytes(abs(v))
    return f"{v:+,.0f}"


def _previous(r: dict) -> list[tuple]:
    plan = r.get("plan")
    if not plan:
        return []
    pp = plan["period_over_period"]
    rows = [
        [
            x["label"],
            _fmt_value(x["current"], x["unit"]),
            _fmt_value(x["previous"], x["unit"]),
            _change(x["change"], x["unit"]),
        ]
        for x in pp["rows"]
    ]
    length = format_duration(r["meta"]["range_seconds"])
    return [
        ("h3", "Compared with the previous period"),
        (
            "p",
            [
                f"Each headline figure beside its value for the previous {length} "
                f"({iso(pp['previous_start'])} → {iso(pp['previous_end'])}); – where a period has no data."
            ],
        ),
        ("table", ["figure", "this period", "previous period", "change"], rows),
    ]


def _trends(r: dict) -> list[tuple]:
    plan = r.get("plan")
    if not plan:
        return []
    doc: list[tuple] = [("h2", "Trends and forecasts"), ("p", [plan["assumptions"]])]
    lines = thresholds.LINES
    fleet_rows = [
        [
            t["label"],
            fmt_ratio(t["current"]),
            _per_day(t["ratio_trend_per_day"]),
            in_words(t["days_to_warning"]),
            in_words(t["days_to_critical"]),
        ]
        for t in plan["fleet_trends"]
    ]
    heads = [
        "MOVABLE:KERNEL",
        "at the end",
        "trend / day",
        f"above {lines.warning_label}",
        f"above {lines.critical_label}",
    ]
    doc.append(("table", heads, fleet_rows))
    rising = next((g for g in r["findings"] if g["kind"] == "ratio_rising"), None)
    if rising is None:
        doc.append(("p", [f"No node at or under {lines.warning_label} is heading above it within the horizon."]))
    else:
        doc.append(("p", [rising["text"] + " ", ("link", "details", "#" + _anchor("finding ratio_rising"))]))
    return doc


def _nodes(r: dict, charts: dict[str, dict]) -> list[tuple]:
    n_all, top = r["fleet"]["nodes"], r["nodes"]
    doc: list[tuple] = [("h2", "Highest-risk nodes")]
    if "worst_nodes" in charts:
        doc.append(("img", "worst_nodes", "MOVABLE:KERNEL of the highest-risk nodes", charts["worst_nodes"]))
    weights = "; ".join(f"{risk_label(k)} {w} points (full at {s:g})" for k, (w, s) in risk_weights().items())
    doc.append(
        (
            "p",
            [
                f"The {len(top):,} highest-risk of {n_all:,} nodes (all of them: ",
                ("link", "nodes.csv", r["files"]["nodes_csv"]),
                ", ",
                ("link", "nodes.json", r["files"]["nodes_json"]),
                "). Risk 0–100, higher is worse: " + weights + ". ",
                ("link", "How it is computed", DOC_LINK + "#risk-score"),
                ".",
            ],
        )
    )
    lines = thresholds.LINES
    headers = [
        "#",
        "instance",
        "node",
        "risk",
        "ratio now",
        "ratio peak",
        f"h > {lines.warning_label}",
        f"h > {lines.critical_label}",
        "hot-unpluggable now",
        "offline",
        "failed to offline",
        "cannot offline (blocks)",
        "quarantined peak (host)",
        "failed actions (host)",
        "auto-movable headroom",
        "trend / day",
        f"> {lines.warning_label}",
    ]
    doc.append(("table", headers, [_node_cells(n) for n in top]))
    return doc


def _instance_cell(row: dict) -> Cell:
    url = row.get("grafana_url")
    return [("link", row["instance"], url)] if url else row["instance"]


def _per_day(v: float | None) -> str:
    return "–" if v is None else f"{v:+.2f}"


def _node_cells(n: dict) -> list[Cell]:
    return [
        str(n["rank"]),
        _instance_cell(n),
        n["node"],
        f"{n['risk']:.1f}",
        fmt_ratio(n["ratio_current"]),
        fmt_ratio(n["ratio_peak"]),
        _h(n["hours_above_warning"]),
        _h(n["hours_above_critical"]),
        fmt_bytes(n["hot_unpluggable_current_bytes"]),
        fmt_bytes(n["offline_bytes"]),
        fmt_bytes(n["failed_offline_bytes"]) if n["failed_offline_blocks"] else "0",
        _i(n["unofflinable_blocks_current"]),
        _i(n["quarantined_blocks_peak_host"]),
        str(n["failed_actions_host"]),
        fmt_bytes(n.get("auto_movable_headroom_bytes")),
        _per_day(n.get("ratio_trend_per_day")),
        in_words(n.get("days_to_warning")),
    ]


def _finding_details(groups: list[dict]) -> list[tuple]:
    doc: list[tuple] = []
    for g in groups:
        if not g["entries"]:
            continue
        doc.append(("h3", f"Finding {g['kind']}"))
        doc.append(
            (
                "p",
                [
                    ("sev", g["severity"]),
                    " " + g["text"] + " ",
                    ("link", f"runbook: {g['runbook']}", g["runbook_url"]),
                ],
            )
        )
        items = [_entry_item(e) for e in g["entries"]]
        if g["more"]:
            items.append([f"… and {g['more']:,} more {g['unit']}s (nodes.csv, instances.csv)"])
        doc.append(("ul", items))
    return doc


def _entry_item(e: dict) -> list:
    item: list = [e["text"]]
    if e.get("recommendation"):
        item += [" ", ("b", "Do:"), " " + e["recommendation"]]
    if e.get("grafana_url"):
        item += [" ", ("link", "Grafana", e["grafana_url"])]
    return item


def _hosts(hosts: list[dict], files: dict) -> list[tuple]:
    doc: list[tuple] = [("h2", "Hosts: offline failures and controller")]
    if not hosts:
        doc.append(("p", ["No host logged an offline failure, and the controller had no failures or quarantine."]))
        return doc
    doc.append(
        (
            "p",
            [
                f"The {len(hosts):,} host{'s' if len(hosts) != 1 else ''} with the most failed controller "
                f"actions, quarantined blocks and offline failures (all hosts: ",
                ("link", "instances.csv", files["instances_csv"]),
                ").",
            ],
        )
    )
    doc.append(
        (
            "table",
            ["instance", "failed actions", "by errno", "actions", "offline failures", "quarantined peak / now"],
            [_host_cells(i) for i in hosts],
        )
    )
    return doc


def _host_cells(i: dict) -> list[Cell]:
    return [
        _instance_cell(i),
        str(i["failed_actions"]),
        ", ".join(f"{a['action']} {a['errno'] or '?'}: {a['count']}" for a in i["failed_actions_by_errno"]) or "–",
        ", ".join(f"{a['action']} {a['result']}: {a['count']}" for a in i["actions_by_result"]) or "–",
        ", ".join(f"{k}: {v}" for k, v in i["offline_failures_by_reason"].items()) or "0",
        f"{_i(i['quarantined_blocks']['peak'])} / {_i(i['quarantined_blocks']['current'])}",
    ]


def _blocks(blocks: list[dict]) -> list[tuple]:
    brows = [
        [
            b["instance"],
            b["node"] or "?",
            b["block"],
            b["zone"] or "?",
            ", ".join(f"{k} ×{v}" for k, v in b["reasons"].items()),
            {True: "yes", False: "no", None: "?"}[b["still_online"]],
        ]
        for b in blocks
    ]
    if not brows:
        return []
    return [
        ("h3", "Blocks that could not be offlined"),
        (
            "p",
            [
                "Memory blocks of the hosts listed above whose offlining failed in the period (kernel log, "
                "memhp_block_offline_failures_total), with the kernel's reason."
            ],
        ),
        ("table", ["instance", "node", "block", "zone", "reasons (failures)", "still online at end"], brows),
    ]


def _how_to_read(files: dict) -> list[tuple]:
    lines = thresholds.LINES
    return [
        ("h2", "How to read this report"),
        (
            "p",
            [
                "Ratios are MOVABLE:KERNEL as the kernel's auto-movable policy accounts them (ZONE_MOVABLE "
                f"present + CMA against kernel-zone present − CMA); {lines.warning_label} and "
                f"{lines.critical_label} are the warning and critical "
                "lines of memhp's alerts. Hours above a line are counted at the report's resolution. Counts are "
                "increases of the counters over the period. Full data: ",
                ("link", "nodes.csv", files["nodes_csv"]),
                ", ",
                ("link", "nodes.json", files["nodes_json"]),
                ", ",
                ("link", "instances.csv", files["instances_csv"]),
                ", ",
                ("link", "instances.json", files["instances_json"]),
                ". See ",
                ("link", "docs/capacity-review.md", DOC_LINK),
                ".",
            ],
        ),
    ]


def _stats(s: dict, fmt: Any) -> list[str]:
    return [fmt(s.get("current")), fmt(s.get("min")), fmt(s.get("peak"))]


# -- Markdown


def _md_inline(parts: list[Inline] | str, table: bool = False) -> str:
    if isinstance(parts, str):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p.replace("|", "\\|") if table else p)
        elif p[0] == "b":
            out.append(f"**{p[1]}**")
        elif p[0] == "code":
            out.append(f"`{p[1]}`")
        elif p[0] == "link":
            out.append(f"[{p[1]}]({p[2]})")
        elif p[0] == "sev":
            out.append(f"**{p[1].upper()}**")
    return "".join(out)


def to_markdown(doc: list[tuple]) -> str:
    lines: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [_md_inline(block[1]), ""]
        elif kind == "ul":
            lines += [f"- {_md_inline(item)}" for item in block[1]] + [""]
        elif kind == "table":
            headers, rows = block[1], block[2]
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("| " + " | ".join("---" for _ in headers) + " |")
            lines += ["| " + " | ".join(_md_inline(c, table=True) for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({block[3]['file']})", ""]
    return "\n".join(lines).rstrip() + "\n"


# -- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px auto;max-width:1100px;
color:#1d1d1f;padding:0 16px}
h1{font-size:24px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 12px;font-size:13px}th,td{border:1px solid #d0d0d0;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}
code{background:#f2f2f2;padding:1px 4px;border-radius:3px}img{max-width:100%;height:auto;display:block;margin:8px 0}
.sev{display:inline-block;font-size:11px;font-weight:700;padding:1px 6px;border-radius:3px;color:#fff}
.sev-critical{background:#c0392b}.sev-warning{background:#d68910}.sev-info{background:#5d6d7e}
ul.findings li{margin:4px 0}
"""


def _html_inline(parts: list[Inline] | str) -> str:
    if isinstance(parts, str):
        parts = [parts]
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(html.escape(p))
        elif p[0] == "b":
            out.append(f"<strong>{html.escape(p[1])}</strong>")
        elif p[0] == "code":
            out.append(f"<code>{html.escape(p[1])}</code>")
        elif p[0] == "link":
            out.append(f'<a href="{html.escape(p[2], quote=True)}">{html.escape(p[1])}</a>')
        elif p[0] == "sev":
            out.append(f'<span class="sev sev-{html.escape(p[1])}">{html.escape(p[1].upper())}</span>')
    return "".join(out)


def to_html(doc: list[tuple], chart_dir: Path, title: str) -> str:
    body: list[str] = []
    for block in doc:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            anchor = _anchor(block[1])
            body.append(f'<{kind} id="{html.escape(anchor, quote=True)}">{html.escape(block[1])}</{kind}>')
        elif kind == "p":
            body.append(f"<p>{_html_inline(block[1])}</p>")
        elif kind == "ul":
            cls = (
                ' class="findings"'
                if any(isinstance(x, tuple) and x[0] == "sev" for it in block[1] for x in it)
                else ""
            )
            body.append(f"<ul{cls}>" + "".join(f"<li>{_html_inline(it)}</li>" for it in block[1]) + "</ul>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{_html_inline(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            info = block[3]
            data = base64.b64encode((chart_dir / Path(info["file"]).name).read_bytes()).decode("ascii")
            body.append(
                f'<img id="chart-{html.escape(block[1])}" alt="{html.escape(block[2], quote=True)}" '
                f'width="{info["width"]}" height="{info["height"]}" src="data:image/png;base64,{data}">'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
        f"<style>{CSS}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
