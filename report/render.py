"""The review as a document (headings, paragraphs, lists, tables, images),
rendered twice: Markdown (charts as files next to it) and one self-contained
HTML page (charts inlined as data: URIs, inline CSS, no script, no external
resource)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from .analysis import RISK, fmt_bytes, fmt_ratio
from .promapi import format_duration

Inline = str | tuple  # "text" | ("b", text) | ("code", text) | ("link", text, url) | ("sev", level)
Cell = str | list

DOC_LINK = "https://github.com/memhp/memhp/blob/main/docs/capacity-review.md"


def _h(n: float | None) -> str:
    return "–" if n is None else f"{n:.1f}"


def _i(n: Any) -> str:
    return "–" if n is None else str(n)


def build(r: dict, charts: dict[str, dict]) -> list[tuple]:
    m, f = r["meta"], r["fleet"]
    doc: list[tuple] = [("h1", "memhp capacity review")]
    sel = m["selector"]
    doc.append(
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
                f" · generated {m['generated_at']}",
            ],
        )
    )
    if m["warnings"]:
        doc.append(("ul", [[("b", "Note:"), " " + w] for w in m["warnings"]]))

    doc.append(("h2", "Findings"))
    if r["findings"]:
        doc.append(
            (
                "ul",
                [
                    [
                        ("sev", x["severity"]),
                        " " + x["text"] + " ",
                        ("link", f"runbook: {x['alert']}", x["runbook_url"]),
                    ]
                    for x in r["findings"]
                ],
            )
        )
    else:
        doc.append(
            (
                "p",
                [
                    "Nothing to report: no node went above 3:1, no offline failed, the controller had no "
                    "failures or quarantined blocks."
                ],
            )
        )

    doc.append(("h2", "Fleet totals"))
    rows = [
        ["memory in online blocks", *_stats(f["online_bytes"], fmt_bytes)],
        ["memory in offline blocks", *_stats(f["offline_bytes"], fmt_bytes)],
        ["memory in going-offline blocks", *_stats(f["going_offline_bytes"], fmt_bytes)],
        ["hot-unpluggable (online ZONE_MOVABLE)", *_stats(f["hot_unpluggable_bytes"], fmt_bytes)],
        ["MOVABLE:KERNEL (fleet)", *_stats(f["ratio"], fmt_ratio)],
    ]
    doc.append(("table", ["figure", "end of period", "minimum", "peak"], rows))
    acts = ", ".join(f"{a['action']} {a['result']}: {a['count']}" for a in f["actions_by_result"]) or "none"
    fails = ", ".join(f"{k}: {v}" for k, v in f["offline_failures_by_reason"].items()) or "none"
    doc.append(
        (
            "table",
            ["figure", "value"],
            [
                ["hosts (instances) / NUMA nodes", f"{f['instances']} / {f['nodes']}"],
                [
                    "online kernel zones / ZONE_MOVABLE, end of period",
                    f"{fmt_bytes(f['online_kernel_bytes'])} / {fmt_bytes(f['online_movable_bytes'])}",
                ],
                [
                    "nodes above 4:1 / above 3:1 during the period",
                    f"{f['nodes_above_4_in_period']} / {f['nodes_above_3_in_period']}",
                ],
                ["nodes above 3:1 at the end of the period", str(f["nodes_above_3_now"])],
                ["offline failures (kernel log), by reason", f"{f['offline_failures']} ({fails})"],
                ["memory in blocks that failed to offline", fmt_bytes(f["failed_offline_bytes"])],
                ["online blocks that cannot be offlined (valid_zones none)", str(f["unofflinable_blocks"])],
                ["controller actions (blocks), by result", acts],
                [
                    "hosts that quarantined blocks / blocks quarantined now",
                    f"{f['instances_with_quarantine']} / {f['quarantined_blocks_now']}",
                ],
            ],
        )
    )

    doc.append(("h2", "Nodes ranked by risk"))
    doc.append(
        (
            "p",
            [
                "Risk score 0–100, higher is worse: "
                + "; ".join(f"{k.replace('_', ' ')} {w} points (full at {s:g})" for k, (w, s) in RISK.items())
                + ". ",
                ("link", "How it is computed", DOC_LINK + "#risk-score"),
                ".",
            ],
        )
    )
    ranked = sorted(r["nodes"], key=lambda n: n["risk"]["rank"])
    insts = {i["instance"]: i for i in r["instances"]}
    doc.append(
        (
            "table",
            [
                "#",
                "instance",
                "node",
                "risk",
                "ratio now",
                "ratio peak",
                "h > 3:1",
                "h > 4:1",
                "hot-unpluggable now",
                "failed to offline",
                "cannot offline (blocks)",
                "quarantined peak (host)",
                "failed actions (host)",
            ],
            [
                [
                    str(n["risk"]["rank"]),
                    n["instance"],
                    n["node"],
                    f"{n['risk']['score']:.1f}",
                    fmt_ratio(n["ratio"]["current"]),
                    fmt_ratio(n["ratio"]["peak"]),
                    _h(n["hours_above_3"]),
                    _h(n["hours_above_4"]),
                    fmt_bytes(n["hot_unpluggable_bytes"]["current"]),
                    fmt_bytes(n["failed_offline_bytes"]) if n["failed_offline_blocks"] else "0",
                    _i(n["unofflinable_blocks"]["current"]),
                    _i(insts[n["instance"]]["quarantined_blocks"]["peak"]),
                    str(insts[n["instance"]]["failed_actions"]),
                ]
                for n in ranked
            ],
        )
    )

    doc.append(("h2", "Capacity per node"))
    if "capacity" in charts:
        doc.append(
            (
                "img",
                "capacity",
                "Memory per node over the period: online kernel zones, online ZONE_MOVABLE, "
                "offline and going-offline blocks",
                charts["capacity"],
            )
        )
    doc.append(
        (
            "table",
            [
                "instance",
                "node",
                "online",
                "kernel zones",
                "ZONE_MOVABLE",
                "mixed (none)",
                "offline",
                "hot-unpluggable peak",
                "minimum",
                "end of period",
            ],
            [
                [
                    n["instance"],
                    n["node"],
                    fmt_bytes(n["bytes"]["online"]),
                    fmt_bytes(n["bytes"]["online_kernel"]),
                    fmt_bytes(n["bytes"]["online_movable"]),
                    fmt_bytes(n["bytes"]["online_mixed"]),
                    fmt_bytes(n["bytes"]["offline"]),
                    fmt_bytes(n["hot_unpluggable_bytes"]["peak"]),
                    fmt_bytes(n["hot_unpluggable_bytes"]["min"]),
                    fmt_bytes(n["hot_unpluggable_bytes"]["current"]),
                ]
                for n in ranked
            ],
        )
    )
    doc.append(("p", ["Online, kernel zones, ZONE_MOVABLE, mixed and offline are at the end of the period."]))

    doc.append(("h2", "MOVABLE:KERNEL ratio"))
    if "ratio" in charts:
        doc.append(("img", "ratio", "MOVABLE:KERNEL per node against the 3:1 and 4:1 lines", charts["ratio"]))
    doc.append(
        (
            "table",
            ["instance", "node", "end of period", "minimum", "peak", "peak at", "h > 3:1", "h > 4:1", "longest > 4:1"],
            [
                [
                    n["instance"],
                    n["node"],
                    fmt_ratio(n["ratio"]["current"]),
                    fmt_ratio(n["ratio"]["min"]),
                    fmt_ratio(n["ratio"]["peak"]),
                    n["ratio"]["peak_at_iso"] or "–",
                    _h(n["hours_above_3"]),
                    _h(n["hours_above_4"]),
                    f"{n['longest_above_4']['hours']:.1f} h from {n['longest_above_4']['from']}"
                    if n["longest_above_4"]["hours"]
                    else "–",
                ]
                for n in ranked
            ],
        )
    )

    doc.append(("h2", "Blocks that could not be offlined"))
    brows = [
        [
            n["instance"],
            n["node"],
            b["block"],
            b["zone"] or "?",
            ", ".join(f"{k} ×{v}" for k, v in b["reasons"].items()),
            {True: "yes", False: "no", None: "?"}[b["still_online"]],
        ]
        for n in ranked
        for b in n["failed_offline_blocks"]
    ]
    brows += [
        [
            i["instance"],
            "?",
            b["block"],
            b["zone"] or "?",
            ", ".join(f"{k} ×{v}" for k, v in b["reasons"].items()),
            {True: "yes", False: "no", None: "?"}[b["still_online"]],
        ]
        for i in r["instances"]
        for b in i["failed_offline_blocks_unknown_node"]
    ]
    if brows:
        doc.append(
            (
                "p",
                [
                    "Memory blocks whose offlining failed during the period (kernel log, "
                    "memhp_block_offline_failures_total), with the kernel's reason."
                ],
            )
        )
        doc.append(("table", ["instance", "node", "block", "zone", "reasons (failures)", "still online at end"], brows))
    else:
        doc.append(("p", ["No offline attempt failed in the period."]))
    urows = [
        [
            n["instance"],
            n["node"],
            _i(n["unofflinable_blocks"]["current"]),
            _i(n["unofflinable_blocks"]["peak"]),
            fmt_bytes(n["bytes"]["online_mixed"]),
        ]
        for n in ranked
        if (n["unofflinable_blocks"]["peak"] or 0) > 0
    ]
    if urows:
        doc.append(
            (
                "p",
                [
                    "Online blocks the kernel cannot offline at all (valid_zones none: the block spans zones "
                    "or nodes, or contains holes):"
                ],
            )
        )
        doc.append(("table", ["instance", "node", "blocks, end of period", "peak", "online mixed-zone memory"], urows))

    doc.append(("h2", "Offline failures"))
    if "failures" in charts:
        doc.append(("img", "failures", "Offline failures by reason over the period", charts["failures"]))
    frows = [
        [i["instance"], reason, str(n)] for i in r["instances"] for reason, n in i["offline_failures_by_reason"].items()
    ]
    doc.append(
        ("table", ["instance", "reason", "failures"], frows)
        if frows
        else (
            "p",
            ["The kernel logged no offline failure in the period (or the offline_failures collector was not running)."],
        )
    )

    doc.append(("h2", "Controller"))
    if "actions" in charts:
        doc.append(("img", "actions", "Controller actions on memory blocks by result", charts["actions"]))
    arows = [
        [i["instance"], a["action"], a["result"], a["errno"] or "–", str(a["count"])]
        for i in r["instances"]
        for a in i["actions"]
    ]
    doc.append(
        ("table", ["instance", "action", "result", "errno", "blocks"], arows)
        if arows
        else ("p", ["The controller took no action in the period."])
    )
    qrows = [
        [i["instance"], _i(i["quarantined_blocks"]["peak"]), _i(i["quarantined_blocks"]["current"])]
        for i in r["instances"]
        if i["quarantined_blocks"]["peak"] is not None
    ]
    if qrows:
        doc.append(("table", ["instance", "quarantined blocks, peak", "end of period"], qrows))

    doc.append(("h2", "How to read this report"))
    doc.append(
        (
            "p",
            [
                "Ratios are MOVABLE:KERNEL as the kernel's auto-movable policy accounts them (ZONE_MOVABLE "
                "present + CMA against kernel-zone present − CMA); 3:1 and 4:1 are the warning and critical "
                "lines of memhp's alerts. Hours above a line are counted at the report's resolution. Counts are "
                "increases of the counters over the period, rounded. See ",
                ("link", "docs/capacity-review.md", DOC_LINK),
                ".",
            ],
        )
    )
    return doc


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
            anchor = block[1].lower().replace(" ", "-").replace(":", "")
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
