"""``memhp report``: a capacity review from Prometheus (read-only: it only
queries Prometheus's HTTP API, never sysfs)."""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from memhp.program import EXIT_USAGE, UsageError
from memhp.promapi import (
    DEFAULT_MAX_SAMPLES,
    Prometheus,
    ReportError,
    auto_step,
    format_duration,
    normalize_selector,
    parse_duration,
    parse_time,
)

from . import backtest, thresholds
from .grafana import check_base
from .rowstore import InstanceRows, NodeRows, RowStore
from .thresholds import RUNBOOK_BASE

if TYPE_CHECKING:
    from .collect import Collected, Collector


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


EXAMPLE = """examples:
  memhp report --prometheus http://prometheus:9090 --range 30d --out review/
  memhp report --prometheus http://prometheus:9090 --range 7d --selector '{instance=~"db.*"}' --out review/ --json
"""


def add_report_parser(sub) -> None:
    p = sub.add_parser(
        "report",
        help="capacity review from Prometheus (HTML, Markdown, PNG charts, JSON)",
        description="Query Prometheus (memhp's recording rules, alerts/memhp.rules.yaml) over a time "
        "range and write a capacity review: report.html (self-contained), report.md, "
        "report.json, charts/*.png, and every node's and host's figures in nodes.csv, nodes.json, "
        "instances.csv and instances.json in --out.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL, e.g. http://prom:9090")
    p.add_argument(
        "--range",
        default="30d",
        metavar="DURATION",
        dest="range_",
        help="reviewed period, ending at --end (Prometheus duration: 30d, 1w, 12h; default 30d)",
    )
    p.add_argument("--end", metavar="TIME", help="end of the period: RFC 3339 or Unix seconds (default: now)")
    p.add_argument(
        "--step",
        metavar="DURATION",
        help="query resolution (default: the smallest of 1m, 2m, 5m, ... that keeps every series under "
        "Prometheus' 11,000 points; a smaller --step is raised to that)",
    )
    p.add_argument(
        "--selector",
        default="",
        metavar="'{...}'",
        help="label matchers added to every query, e.g. '{instance=~\"db.*\"}' (labels the recording "
        "rules keep: instance, node)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument(
        "--json", action="store_true", help="print the report as JSON on stdout (also written to DIR/report.json)"
    )
    p.add_argument(
        "--runbook-url",
        default=None,
        metavar="URL",
        help="base URL of docs/runbooks.md for the findings' links (default: runbooks.base_url of "
        "memhp/thresholds.yaml, as in the alerts' runbook_url)",
    )
    p.add_argument(
        "--grafana-url",
        default=None,
        metavar="URL",
        help="base URL of the Grafana that has memhp's dashboards: each host and node row links to the "
        "memhp / Node dashboard with its variables set and the reviewed period (default: no links)",
    )
    p.add_argument(
        "--top",
        type=int,
        default=20,
        metavar="N",
        help="nodes and hosts listed in the tables, highest risk first (default 20; all of them are in "
        "nodes.csv/nodes.json and instances.csv/instances.json)",
    )
    p.add_argument(
        "--top-findings",
        type=int,
        default=10,
        metavar="N",
        help="entries listed under each kind of finding, worst first (default 10)",
    )
    p.add_argument(
        "--query-max-samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        metavar="N",
        help="the server's sample limit (Prometheus --query.max-samples, default 50000000): queries are "
        "split to use at most half of it",
    )
    p.add_argument(
        "--batch-hosts",
        type=int,
        default=BATCH_HOSTS,
        metavar="N",
        help=f"hosts whose per-node figures are collected together (1-{MAX_BATCH_HOSTS}, default {BATCH_HOSTS}): "
        "the report's memory is one batch's, whatever the fleet; fewer means less memory and a few more "
        "requests to Prometheus",
    )
    p.add_argument("--timeout", default="60s", metavar="DURATION", help="per-request timeout (default 60s)")
    prog = p.add_mutually_exclusive_group()
    prog.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress on stderr (default: only when stderr is a terminal)",
    )
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    backtest.add_arguments(p)
    p.set_defaults(func=run_report)


class Progress:
    """``[  3] 0.4s query …`` on stderr: one rewritten line on a terminal, plain
    lines otherwise (only with --progress)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and stream.isatty()
        self.done, self.t0 = 0, time.monotonic()

    def tick(self, what: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        what = what if len(what) <= 70 else what[:67] + "..."
        # the number of requests is not known in advance (queries are split as the sizes require)
        line = f"memhp report: [{self.done:>3}] {time.monotonic() - self.t0:5.1f}s {what}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write(("\r\033[K" if self.tty else "") + f"memhp report: {text}\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_report(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as e:
        print(f"memhp report: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ReportError as e:
        print(f"memhp report: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memhp report: interrupted", file=sys.stderr)
        return 130


@dataclass(frozen=True)
class Period:
    """What the arguments ask for, checked."""

    start: float
    end: float
    step: float
    range_s: float
    selector: str
    timeout: float
    warnings: list[str]


def _period(args: argparse.Namespace) -> Period:
    try:
        range_s = parse_duration(args.range_)
        end = parse_time(args.end) if args.end else time.time()
        requested = parse_duration(args.step) if args.step else None
        selector = normalize_selector(args.selector)
        timeout = parse_duration(args.timeout)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not 1 <= args.top <= MAX_TOP or not 1 <= args.top_findings <= MAX_TOP:
        raise UsageError(f"--top and --top-findings must be between 1 and {MAX_TOP}")
    if not 1 <= args.batch_hosts <= MAX_BATCH_HOSTS:
        raise UsageError(f"--batch-hosts must be between 1 and {MAX_BATCH_HOSTS}")
    if not 1000 <= args.query_max_samples <= 10**12:
        raise UsageError("--query-max-samples must be between 1000 and 10^12")
    step, note = auto_step(range_s, requested)
    # without --end, "now" is rounded down to the step so that the grid falls on whole steps
    end = float(int(end // step) * step) if not args.end else end
    return Period(end - range_s, end, step, range_s, selector, timeout, [note] if note else [])


def _run(args: argparse.Namespace) -> int:
    period = _period(args)
    for w in period.warnings:
        print(f"memhp report: note: {w}", file=sys.stderr)
    progress = Progress(sys.stderr, args.progress if args.progress is not None else sys.stderr.isatty())
    prom = Prometheus(args.prometheus, timeout=period.timeout, on_request=progress.tick)
    try:  # heavier imports after the argument checks; charts need the `report` extra
        from .charts import render_charts
        from .plan import add_plan, collect_plan
    except ImportError as e:
        raise ReportError(f"memhp report needs matplotlib ({e}): pip install 'memhp[report]'") from None

    t0 = time.monotonic()
    grafana = _grafana_base(args)
    out = Path(args.out)
    try:
        store = RowStore()
    except (OSError, sqlite3.Error) as e:
        raise ReportError(f"cannot create the report's temporary row store: {e}") from None
    with store:
        col, rows, insts, hosts = _collect(args, prom, period, progress, store)
        plan = collect_plan(col)
        report = _assemble(args, prom, period, col.c, rows, insts, hosts)
        runbook = (args.runbook_url or RUNBOOK_BASE).rstrip("/")
        add_plan(report, col.c, rows, insts, plan, grafana, runbook, args.top_findings)
        try:
            out.mkdir(parents=True, exist_ok=True)
            report["backtest"] = backtest.run(args, prom, period.start, period.end, out)
            progress.message("drawing charts")
            shown = [(n["instance"], n["node"]) for n in rows[:SHOWN]]
            report["charts"] = render_charts(col.c, shown, out / "charts")
            write_full_data(out, rows, insts)
            report["meta"]["prometheus_requests"] = prom.requests
            report["meta"]["prometheus_seconds"] = round(prom.query_seconds, 3)
            report["meta"]["wall_seconds"] = round(time.monotonic() - t0, 3)
            _write_documents(out, report)
        except (OSError, sqlite3.Error) as e:
            raise ReportError(f"cannot write the report to {out}: {e}") from None

    if args.json:
        json.dump(report, sys.stdout, indent=1, sort_keys=False)
        sys.stdout.write("\n")
    else:
        _print_summary(report, period.range_s, out)
    return 0


def _grafana_base(args: argparse.Namespace) -> str | None:
    if not args.grafana_url:
        return None
    try:
        return check_base(args.grafana_url)
    except ValueError as e:
        raise ReportError(str(e)) from None


def _collect(
    args: argparse.Namespace, prom: Prometheus, period: Period, progress: Progress, store: RowStore
) -> tuple[Collector, NodeRows, InstanceRows, list[dict]]:
    """Every figure from Prometheus: the node rows ranked, the host rows, and
    the hosts listed in the report.  Node and host figures come a batch of
    hosts at a time and go to ``store`` (on disk), so the report's memory does
    not grow with the fleet."""
    from .analysis import rank
    from .collect import SHOWN_NODES, Collector, probe
    from .plan import extend_rows
    from .planning import node_plan_figures

    instances, nodes = probe(prom, period.selector, period.start, period.end, period.step)
    progress.message(f"{instances} host(s), {nodes} NUMA node(s)")
    col = Collector(
        prom, period.selector, period.start, period.end, period.step, args.query_max_samples, instances, nodes
    )
    for names in col.instance_batches(args.batch_hosts):
        part = col.batch(names)
        part.node_figures()
        part.instance_figures()
        part.event_figures()
        node_plan_figures(part)
        col.add_bars(part.c.bars)
        batch_rows, batch_insts = rank(part.c)
        extend_rows(part.c, batch_rows)
        store.add(batch_rows, batch_insts.values())
    col.fleet_curves()
    rows, insts = store.nodes, store.instances
    col.shown_ratio([(n["instance"], n["node"]) for n in rows[:SHOWN_NODES]])
    hosts = sorted(
        (i for i in insts.values() if i["failed_actions"] or i["offline_failures"] or i["quarantined_blocks"]["peak"]),
        key=lambda i: (
            -i["failed_actions"],
            -(i["quarantined_blocks"]["peak"] or 0),
            -i["offline_failures"],
            i["instance"],
        ),
    )[: args.top]
    listed = {n["instance"] for n in rows[: args.top]} | {i["instance"] for i in hosts}
    col.listed_blocks(i for i in listed if insts.get(i, {}).get("failed_offline_blocks"))
    progress.finish()
    return col, rows, insts, hosts


def _assemble(
    args: argparse.Namespace,
    prom: Prometheus,
    period: Period,
    c: Collected,
    rows: NodeRows,
    insts: InstanceRows,
    hosts: list[dict],
) -> dict:
    """The report as data (report.json), before the charts are drawn."""
    from .analysis import detail, findings, fleet_figures, risk_weights, summary

    details: dict[tuple[str, str], dict] = {}

    def details_of(row: dict) -> dict:
        key = (row["instance"], row["node"])
        if key not in details:
            details[key] = detail(c, row)
        return details[key]

    fleet = fleet_figures(c, rows, insts)
    lines = thresholds.LINES
    return {
        "meta": {
            "prometheus": prom.url,
            "selector": period.selector,
            "start": c.start,
            "end": c.end,
            "start_iso": iso(c.start),
            "end_iso": iso(c.end),
            "range_seconds": period.range_s,
            "step_seconds": c.step,
            "event_bucket_seconds": c.bucket,
            "generated_at": iso(datetime.now(UTC).timestamp()),
            "thresholds": {"warning": lines.warning, "critical": lines.critical},
            "risk_weights": {k: {"weight": w, "saturates_at": s} for k, (w, s) in risk_weights().items()},
            "top": args.top,
            "query_max_samples": args.query_max_samples,
            "warnings": period.warnings,
            "fleet_curves_source": c.fleet_curves_source,
        },
        "summary": summary(fleet),
        "findings": findings(
            rows, insts, details_of, (args.runbook_url or RUNBOOK_BASE).rstrip("/"), args.top_findings
        ),
        "fleet": fleet,
        "charts": {},
        "nodes": [details_of(n) for n in rows[: args.top]],
        "instances": hosts,
        "blocks": [{"instance": i, **b} for i in sorted(c.blocks) for b in c.blocks[i]],
        "files": dict(FILES),
    }


def _write_documents(out: Path, report: dict) -> None:
    from .render import build, to_html, to_markdown

    doc = build(report, report["charts"])
    (out / "report.md").write_text(to_markdown(doc))
    title = f"memhp capacity review {report['meta']['start_iso']} – {report['meta']['end_iso']}"
    (out / "report.html").write_text(to_html(doc, out / "charts", title))
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")


def _print_summary(report: dict, range_s: float, out: Path) -> None:
    f = report["fleet"]
    print(
        f"memhp report: {f['instances']} host(s), {f['nodes']} NUMA node(s), "
        f"{format_duration(range_s)} ending {report['meta']['end_iso']}"
    )
    for line in report["summary"][1:]:
        print(f"  {line}")
    for g in report["findings"]:
        print(f"  [{g['severity']}] {g['text']}")
        for entry in g["entries"][:3]:
            print(f"      {entry['text']}")
    print(f"wrote {out / 'report.html'}, report.md, report.json, nodes.csv, nodes.json, instances.csv, instances.json")


FILES = {
    "nodes_csv": "nodes.csv",
    "nodes_json": "nodes.json",
    "instances_csv": "instances.csv",
    "instances_json": "instances.json",
}
SHOWN = 10
MAX_TOP = 1000
# Hosts whose node and host rows are collected together: the report's memory is one batch's answers
# and rows (a few KiB per host), whatever the fleet; each batch costs Prometheus about 20 requests,
# which read the same series as one fleet-wide request would, in parts.
BATCH_HOSTS = 2000
MAX_BATCH_HOSTS = 100_000


def _cell(v: object) -> object:
    return json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else ("" if v is None else v)


def write_full_data(out: Path, rows: Iterable[dict], insts: InstanceRows) -> None:
    """Every node's and host's row, as CSV and as JSON, both files written in one pass over the
    rows as they stream from the row store (the columns are the first row's)."""
    for name, items in (("nodes", iter(rows)), ("instances", insts.values())):
        first = next(items, None)
        if first is None:
            (out / f"{name}.csv").write_text("")
            (out / f"{name}.json").write_text("[]\n")
            continue
        fields = list(first)
        with (out / f"{name}.csv").open("w", newline="") as fc, (out / f"{name}.json").open("w") as fj:
            w = csv.writer(fc)
            w.writerow(fields)
            fj.write("[\n")
            for i, it in enumerate(itertools.chain([first], items)):
                w.writerow([_cell(it.get(k)) for k in fields])
                fj.write(("," if i else "") + json.dumps(it, sort_keys=True) + "\n")
            fj.write("]\n")
