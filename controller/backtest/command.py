"""``memhp-controller backtest``: what would this policy have done over this period, fleet-wide."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import msgspec

from memhp.promapi import (
    DEFAULT_MAX_SAMPLES,
    Prometheus,
    ReportError,
    auto_step,
    parse_duration,
    parse_time,
)
from memhp.units import parse_duration as parse_seconds

from ..config import Config
from .history import Window
from .run import Options, backtest
from .summary import summary_lines

DESCRIPTION = """\
Replay the memhp alerts that fired (Prometheus' ALERTS series) through the
policy of --config.file, in time order: rule matching, every guard the past
can decide (cooldown, caps, reserve, ratio from memhp's own series at each
time), the staged rollout and the fleet budget.  Prints per-rule and
fleet-wide figures; --out writes backtest.json, backtest-actions.csv and
backtest-hosts.csv.  Read-only: it only queries Prometheus.

It cannot know kernel refusals (EBUSY, EPERM), pause files, etcd or gate
outages or how long actions take: it says so in its output.
"""

MAX_DURATION = 86400.0


def add_backtest_parser(sub, add_common) -> None:
    p = sub.add_parser(
        "backtest",
        help="replay past alerts through the policy (read-only; queries Prometheus)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_backtest_arguments(p)
    p.add_argument("--out", metavar="DIR", help="write backtest.json and the CSV files here (created)")
    p.add_argument("--json", action="store_true", help="print the fleet figures as JSON")
    add_common(p, suppress=True)


def add_backtest_arguments(p: argparse.ArgumentParser, prometheus: bool = True) -> None:
    if prometheus:
        p.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL")
        p.add_argument("--range", dest="range_", default="30d", metavar="DURATION", help="period (default 30d)")
        p.add_argument("--end", metavar="TIME", help="end of the period: RFC 3339 or Unix seconds (default: now)")
        p.add_argument(
            "--step",
            default="1m",
            metavar="DURATION",
            help="the alerting rules' evaluation interval (default 1m): the resolution of firing starts",
        )
        p.add_argument("--timeout", default="60s", metavar="DURATION", help="per-request timeout (default 60s)")
        p.add_argument(
            "--query-max-samples",
            type=int,
            default=DEFAULT_MAX_SAMPLES,
            metavar="N",
            help="the server's --query.max-samples (default 50000000): queries use at most half of it",
        )
    p.add_argument(
        "--assume.action-duration",
        dest="action_duration",
        default="30s",
        metavar="DURATION",
        help="how long each simulated action holds a fleet budget slot (default 30s; at most 1d)",
    )
    p.add_argument(
        "--host-label",
        default="instance",
        metavar="LABEL",
        help="the alerts' and memhp series' label naming the host (default instance; a :port is dropped "
        "for the rollout hash, which must then equal each controller's fleet.host)",
    )


def clip_middle(text: str, head: int = 400, tail: int = 800) -> str:
    """A refusal quotes the whole query (thousands of host names): keep its start and the reason at its end."""
    if len(text) <= head + tail + 20:
        return text
    return f"{text[:head]} … ({len(text) - head - tail} characters) … {text[-tail:]}"


def action_duration(text: str) -> float:
    v = parse_seconds(text)
    if not 0 < v <= MAX_DURATION:
        raise ValueError(f"--assume.action-duration must be between 0 and 1d: {text!r}")
    return v


def options(args: argparse.Namespace, policy: str, start: float, end: float, step: float) -> Options:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,127}", args.host_label):
        raise ValueError(f"--host-label must be a Prometheus label name: {args.host_label!r}")
    return Options(
        Window(start, end, step),
        policy,
        action_duration(args.action_duration),
        args.host_label,
        getattr(args, "query_max_samples", DEFAULT_MAX_SAMPLES),
    )


def run_backtest(args: argparse.Namespace, cfg: Config) -> int:
    try:
        range_s = parse_duration(args.range_)
        step = parse_duration(args.step)
        end = parse_time(args.end) if args.end else time.time() // step * step
        timeout = parse_duration(args.timeout)
        if not 1000 <= args.query_max_samples <= 10**12:
            raise ValueError("--query-max-samples must be between 1000 and 10^12")
        if range_s / step > 10_000_000:
            raise ValueError("--range / --step is more than 10,000,000 steps")
        auto_step(step * 2, step)  # a step Prometheus accepts
        opt = options(args, args.config_file or "(no policy: no rules)", end - range_s, end, step)
    except ValueError as e:
        print(f"memhp-controller backtest: {e}", file=sys.stderr)
        return 2
    if getattr(args, "dry_run", False):  # as the daemon: --dry-run overrides guards.dry_run
        cfg = msgspec.structs.replace(cfg, guards=msgspec.structs.replace(cfg.guards, dry_run=True))
    if not cfg.rules:
        print("memhp-controller backtest: the policy has no rules: nothing would ever act", file=sys.stderr)
    out = Path(args.out) if args.out else None
    try:
        if out:
            out.mkdir(parents=True, exist_ok=True)
        s = backtest(Prometheus(args.prometheus, timeout=timeout), cfg, opt, out)
    except ReportError as e:
        print(f"memhp-controller backtest: error: {clip_middle(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"memhp-controller backtest: cannot write to {out}: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(s, indent=1))
    else:
        print("\n".join(summary_lines(s)))
    return 0
