"""``memhp report``: a capacity review from Prometheus (read-only: it only
queries Prometheus's HTTP API, never sysfs)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from .promapi import Prometheus, ReportError, auto_step, format_duration, normalize_selector, parse_duration, parse_time

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
        "report.json and charts/*.png in --out.",
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
        help="base URL of docs/runbooks.md for the findings' links (default: the alerts' runbook_url)",
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
    p.set_defaults(func=run_report)


class Progress:
    """``[  3/24] query …`` on stderr: one rewritten line on a terminal, plain
    lines otherwise (only with --progress)."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self.stream, self.enabled = stream, enabled
        self.tty = enabled and stream.isatty()
        self.total, self.done, self.t0 = 0, 0, time.monotonic()

    def start(self, total: int) -> None:
        self.total = self.done + total  # the probe's requests came first

    def tick(self, what: str) -> None:
        self.done += 1
        if not self.enabled or not self.total:
            return
        what = what if len(what) <= 70 else what[:67] + "..."
        line = f"memhp report: [{min(self.done, self.total):>3}/{self.total}] {time.monotonic() - self.t0:5.1f}s {what}"
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
    except ReportError as e:
        print(f"memhp report: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("memhp report: interrupted", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        range_s = parse_duration(args.range_)
        end = parse_time(args.end) if args.end else time.time()
        requested = parse_duration(args.step) if args.step else None
        selector = normalize_selector(args.selector)
        timeout = parse_duration(args.timeout)
    except ValueError as e:
        raise ReportError(str(e)) from None
    step, note = auto_step(range_s, requested)
    end = float(int(end // step) * step) if not args.end else end
    start = end - range_s
    warnings = [note] if note else []
    for w in warnings:
        print(f"memhp report: note: {w}", file=sys.stderr)

    progress = Progress(sys.stderr, args.progress if args.progress is not None else sys.stderr.isatty())
    prom = Prometheus(args.prometheus, timeout=timeout, on_request=progress.tick)

    try:  # heavier imports after the argument checks; charts need the `report` extra
        from .charts import render_charts
    except ImportError as e:
        raise ReportError(f"memhp report needs matplotlib ({e}): pip install 'memhp[report]'") from None
    from .collect import collect, probe

    probe(prom, selector, start, end)
    data = collect(prom, selector, start, end, step, progress=progress.start)
    progress.finish()

    from .analysis import RUNBOOK_BASE, analyze

    report = analyze(
        data,
        prometheus=prom.url,
        selector=selector,
        range_s=range_s,
        runbook_base=(args.runbook_url or RUNBOOK_BASE).rstrip("/"),
        warnings=warnings,
    )
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        progress.message("drawing charts")
        from .render import build, to_html, to_markdown

        charts = render_charts(data, report, out / "charts")
        report["charts"] = charts
        doc = build(report, charts)
        (out / "report.md").write_text(to_markdown(doc))
        title = f"memhp capacity review {report['meta']['start_iso']} – {report['meta']['end_iso']}"
        (out / "report.html").write_text(to_html(doc, out / "charts", title))
        (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise ReportError(f"cannot write the report to {out}: {e}") from None

    if args.json:
        json.dump(report, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        f = report["fleet"]
        print(
            f"memhp report: {f['instances']} host(s), {f['nodes']} NUMA node(s), "
            f"{format_duration(range_s)} ending {report['meta']['end_iso']}: {len(report['findings'])} finding(s)"
        )
        for x in report["findings"][:10]:
            print(f"  [{x['severity']}] {x['text']}")
        if len(report["findings"]) > 10:
            print(f"  ... and {len(report['findings']) - 10} more")
        print(
            f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'report.json'}, "
            f"{len(charts)} chart(s) in {out / 'charts'}"
        )
    return 0
