"""``memhp report --policy POLICY``: the backtest (``memhp-controller
backtest``) as a section of the capacity review, over the same period."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from memhp.promapi import Prometheus, ReportError, parse_duration


def add_arguments(p: argparse.ArgumentParser) -> None:
    from memhp.controller.backtest.command import add_backtest_arguments

    g = p.add_argument_group("backtest (with --policy)")
    g.add_argument(
        "--policy",
        metavar="FILE",
        help="a memhp-controller policy: add what it would have done over the period (the backtest), "
        "with backtest.json, backtest-actions.csv and backtest-hosts.csv in --out",
    )
    g.add_argument(
        "--backtest.step",
        dest="backtest_step",
        default="1m",
        metavar="DURATION",
        help="the alerting rules' evaluation interval, the backtest's resolution (default 1m)",
    )
    add_backtest_arguments(g, prometheus=False)  # type: ignore[arg-type]


def run(args: argparse.Namespace, prom: Prometheus, start: float, end: float, out: Path) -> dict | None:
    """The backtest's fleet figures, or None without --policy."""
    if not getattr(args, "policy", None):
        return None
    from memhp.controller.backtest.command import options
    from memhp.controller.backtest.run import backtest
    from memhp.controller.config import ConfigError, load_config

    try:
        cfg = load_config(args.policy)
        step = parse_duration(args.backtest_step)
        opt = options(args, args.policy, start, end, step)
    except ConfigError as e:
        raise ReportError(f"--policy: invalid policy:\n{e}") from None
    except ValueError as e:
        raise ReportError(str(e)) from None
    out.mkdir(parents=True, exist_ok=True)
    return backtest(prom, cfg, opt, out)


def section(s: dict | None) -> list[tuple[Any, ...]]:
    """The report's section (render.py's blocks)."""
    if not s:
        return []
    from memhp.controller.backtest.summary import summary_lines

    lines = summary_lines(s)
    doc: list[tuple[Any, ...]] = [("h2", "Backtest of the policy"), ("p", [lines[0]])]
    doc.append(("ul", [[line.strip()] for line in lines[1:-1]]))
    rows = [[rule, *(str(c.get(k, 0)) for k in ("act", "dry_run"))] for rule, c in s["by_rule"].items()]
    if rows:
        doc.append(("table", ["rule", "would act", "dry-run"], rows))
    doc.append(("p", [("b", "What the backtest cannot know:")]))
    doc.append(("ul", [[x] for x in s["cannot_know"]]))
    doc.append(
        ("p", ["Every decision: ", ("code", "backtest-actions.csv"), "; per host: ", ("code", "backtest-hosts.csv")])
    )
    return doc
