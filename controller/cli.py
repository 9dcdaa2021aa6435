"""``memhp-controller``: the alert-driven daemon, and ``act``, a safe ``chmem``.

memhp-controller --config.file policy.yaml --web.auth.bearer-token-file tok
memhp-controller --config.file policy.yaml --alertmanager.url http://am:9093 --once
memhp-controller act offline --size 1G --dry-run
memhp-controller act online --blocks 40-43 --zone movable
memhp-controller check-config --config.file policy.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.sources import NO_MEMORY_HOTPLUG, check_sysfs
from memhp.program import ArgumentParser, UsageError, add_common_flags, configure_logging, duration, guarded
from memhp.selfmetrics import register_self_metrics
from memhp.units import parse_id_ranges, parse_size, positive_number

from . import policy_lint
from .backtest.command import add_backtest_parser, run_backtest
from .config import ConfigError, load_config
from .engine import Engine
from .executor import ActionOutcome
from .journal import JournalError
from .metrics import ControllerMetrics
from .policy import Request
from .vocab import Action, Status, Zone, check_action_zone

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # an action failed or was only partly done
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_REFUSED = 3  # a guard refused
EXIT_BUSY = 4  # another controller process holds the action lock

DESCRIPTION = """\
Alert-driven remediation for Linux memory hot(un)plug.

Without a command: run the controller.  It receives Alertmanager webhooks (or
polls Alertmanager with --alertmanager.url), matches alerts against the rules
of --config.file and onlines/offlines memory blocks through guards (dry-run,
pause file, cooldown, hourly and per-action caps, quarantine, reserve, ratio),
journalling every sysfs write.  Its own metrics are on --web.listen-address.
A rule with `event: memory-added` also onlines hot-added blocks itself, from
the kernel's memory uevents, through the same guards (off without one).

Commands:
  act           change blocks by hand through the same guards and actuator
  check-config  validate --config.file and print the effective configuration
  backtest      what --config.file would have done over a past period (Prometheus' ALERTS)
"""

ACT_DESCRIPTION = """\
A safe chmem: change memory blocks by hand, through the controller's guards
(pause file, hourly and per-action caps, quarantine, MemAvailable reserve,
MOVABLE:KERNEL ratio, dry-run) and its actuator (bounded, retried writes in a
child process), with every write journalled.

  online     online offline blocks (zone: movable, kernel or auto; default auto:
             ZONE_MOVABLE while auto_movable_ratio allows, else a kernel zone)
  offline    offline online blocks (zone: movable by default; kernel or any),
             highest address first like chmem -d; never a block whose
             valid_zones is "none"; never below the MemAvailable reserve
  rebalance  move ZONE_MOVABLE blocks to a kernel zone (offline, then
             online_kernel where valid_zones offers it), e.g. until
             --target-ratio MOVABLE:KERNEL is reached

Exactly one of --blocks, --size, --count (or --target-ratio for rebalance)
names the target: there is no "all".

Exit status: 0 done (or dry-run), 1 failed or partial, 2 usage or
configuration error, 3 refused by a guard, 4 another controller process is
acting right now.
"""


def _add_common(p: argparse.ArgumentParser, suppress: bool) -> None:
    d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
    g = p.add_argument_group("common options")
    g.add_argument(
        "--config.file",
        dest="config_file",
        metavar="FILE",
        default=d(None),
        help="policy YAML (rules, guards, retry, journal); default: no rules, default guards",
    )
    g.add_argument(
        "--path.sysfs", dest="path_sysfs", metavar="DIR", default=d("/sys"), help="sysfs mount point (default /sys)"
    )
    g.add_argument(
        "--path.procfs",
        dest="path_procfs",
        metavar="DIR",
        default=d("/proc"),
        help="procfs mount point (default /proc)",
    )
    g.add_argument(
        "--journal.path",
        dest="journal_path",
        metavar="FILE",
        default=d(None),
        help="override controller.journal of the config file",
    )
    g.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        default=d(False),
        help="plan and journal, never write sysfs (overrides guards.dry_run)",
    )
    add_common_flags(g, "memhp-controller", suppress=suppress)


def get_parser() -> argparse.ArgumentParser:
    from .sources.pull import add_pull_arguments
    from .sources.webhook import add_webhook_arguments

    parser = ArgumentParser(
        prog="memhp-controller", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_common(parser, suppress=False)
    parser.add_argument(
        "--once",
        action="store_true",
        help="one pull-mode reconcile (needs --alertmanager.url), wait for its actions, exit",
    )
    parser.add_argument(
        "--once.timeout",
        dest="once_timeout",
        type=duration,
        default="15m",
        metavar="DURATION",
        help="with --once: longest wait for the actions (default %(default)s)",
    )
    add_webhook_arguments(parser)
    add_pull_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    act = sub.add_parser(
        "act",
        help="change blocks by hand through the guards and actuator",
        description=ACT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    act.add_argument("action", choices=[str(a) for a in (Action.ONLINE, Action.OFFLINE, Action.REBALANCE)])
    target = act.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--blocks",
        type=parse_id_ranges,
        metavar="RANGES",
        help="block ids, e.g. 40-43 or 40,42,50-51 (as lsmem prints them)",
    )
    target.add_argument(
        "--size", type=parse_size, metavar="SIZE", help="amount of memory, a multiple of the block size, e.g. 512M, 1G"
    )
    target.add_argument("--count", type=int, metavar="N", help="number of blocks")
    target.add_argument(
        "--target-ratio",
        dest="target_ratio",
        type=positive_number,
        metavar="R",
        help="rebalance only: move blocks until MOVABLE:KERNEL <= R (e.g. 3 for 3:1)",
    )
    act.add_argument(
        "--zone",
        choices=[str(z) for z in Zone],
        help="online: movable|kernel|auto (default auto); offline: movable (default)|kernel|any",
    )
    act.add_argument("--node", type=int, metavar="N", help="only blocks of NUMA node N")
    act.add_argument(
        "--lock-timeout",
        dest="lock_timeout",
        type=duration,
        default="1m",
        metavar="DURATION",
        help="how long to wait for a running controller's action to finish (default %(default)s)",
    )
    act.add_argument("--json", action="store_true", help="print the outcome as JSON")
    _add_common(act, suppress=True)

    chk = sub.add_parser(
        "check-config",
        help="validate --config.file and print the effective configuration",
        description=(
            "Validate the policy file strictly and report every problem in one pass (exit 2); print it "
            "with defaults filled in. Warns (exit 0) when a rule waits for an alert memhp does not ship, "
            "or for a severity its alert never carries: such a rule never acts."
        ),
    )
    _add_common(chk, suppress=True)
    add_backtest_parser(sub, _add_common)
    return parser


def main(argv: list[str] | None = None) -> int:
    return guarded("memhp-controller", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        cfg = load_config(args.config_file)
    except ConfigError as e:
        text = str(e)
        print(f"memhp-controller: invalid configuration:{chr(10) if chr(10) in text else ' '}{text}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        for w in policy_lint.warnings(cfg):
            print(f"memhp-controller: warning: {w}", file=sys.stderr)
        print(json.dumps(cfg.to_dict(), indent=2))
        return EXIT_OK
    if args.command == "backtest":
        return run_backtest(args, cfg)
    paths = Paths(sysfs=args.path_sysfs, procfs=args.path_procfs)
    check_sysfs_flag(paths, refuse=args.command == "act")
    if args.command == "act":
        return run_act(args, cfg, paths)
    return run_daemon(args, cfg, paths, parser)


def check_sysfs_flag(paths: Paths, *, refuse: bool) -> None:
    """Say at start when --path.sysfs is no sysfs with memory blocks; ``act`` then stops (status 2), the
    daemon runs on (its sysfs guard refuses every action, counted in memhp_controller_guard_refusals)."""
    source = check_sysfs(paths)
    if source.available:
        return
    if refuse and source.reason != NO_MEMORY_HOTPLUG:
        raise UsageError(source.detail)
    log.log(
        logging.WARNING if source.reason == NO_MEMORY_HOTPLUG else logging.ERROR,
        "%s (%s): every action will be refused",
        source.detail,
        source.reason,
    )


# --- act ------------------------------------------------------------------------------------------


def act_request(args: argparse.Namespace, cfg) -> Request:
    g = cfg.guards
    if args.target_ratio is not None and args.action != "rebalance":
        raise ValueError("--target-ratio is for rebalance only")
    action, zone = check_action_zone(args.action, args.zone)
    if args.count is not None and args.count <= 0:
        raise ValueError("--count must be positive")
    return Request(
        action=action,
        count=args.count,
        size=args.size,
        blocks=tuple(args.blocks) if args.blocks is not None else None,
        zone=zone,
        node=args.node,
        target_ratio=args.target_ratio,
        max_blocks=g.max_blocks_per_action,
        min_available=g.min_available,
        max_movable_ratio=g.max_movable_ratio,
    )


def run_act(args: argparse.Namespace, cfg, paths: Paths) -> int:
    try:
        req = act_request(args, cfg)
    except ValueError as e:
        print(f"memhp-controller act: {e}", file=sys.stderr)
        return EXIT_USAGE
    engine = Engine(
        cfg,
        paths,
        ControllerMetrics(),
        dry_run=True if args.dry_run else None,
        journal_path=args.journal_path,
        lock_timeout=args.lock_timeout,
    )
    try:
        engine.open()
    except JournalError as e:
        print(f"memhp-controller act: {e}", file=sys.stderr)
        return EXIT_BUSY
    except OSError as e:
        print(f"memhp-controller act: cannot open journal {engine.journal.path}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        for r in engine.reconciled:
            print(f"reconciled an interrupted {r.op} of memory{r.block}: {r.outcome} (state now {r.state_now})")
        try:
            out = engine.run_manual(req)
        except JournalError as e:
            print(f"memhp-controller act: {e}", file=sys.stderr)
            return EXIT_BUSY
    finally:
        engine.close()
    _print_outcome(out, args, engine)
    if out.status in (Status.DONE, Status.DRY_RUN):
        return EXIT_OK
    if out.status == Status.REFUSED:
        return EXIT_REFUSED
    return EXIT_FAILED


def _print_outcome(out: ActionOutcome, args: argparse.Namespace, engine: Engine) -> None:
    if args.json:
        print(
            json.dumps(
                {
                    "status": out.status,
                    "action_id": out.action_id,
                    "guard": out.guard,
                    "detail": out.detail,
                    "plan": out.plan.describe() if out.plan else None,
                    "notes": out.plan.notes if out.plan else [],
                    "results": [
                        {
                            "block": r.block,
                            "op": r.op,
                            "result": r.result,
                            "errno": r.errno,
                            "errno_name": r.errno_name,
                            "attempts": r.attempts,
                            "state_before": r.state_before,
                            "state_after": r.state_after,
                            "zone_after": r.zone_after,
                            "duration": round(r.duration, 6),
                            "detail": r.detail,
                        }
                        for r in out.results
                    ],
                    "journal": engine.journal.path,
                },
                indent=2,
            )
        )
        return
    if out.plan is not None:
        print("plan: " + ", ".join(f"memory{s.block} {'+'.join(s.ops)}" for s in out.plan.steps))
        for n in out.plan.notes:
            print(f"note: {n}")
    for r in out.results:
        extra = f" {r.errno_name}" if r.errno_name else ""
        print(
            f"memory{r.block} {r.op}: {r.result}{extra} after {r.attempts} attempt(s), {r.duration:.2f}s; "
            f"state {r.state_before} -> {r.state_after}"
            + (f" ({r.zone_after})" if r.zone_after else "")
            + (f"; {r.detail}" if r.detail else "")
        )
    if out.status == "refused":
        print(f"refused by guard {out.guard}: {out.detail}", file=sys.stderr)
    elif out.status == "dry_run":
        print("dry-run: nothing was written")
    else:
        print(
            f"{out.status}"
            + (f": {out.detail}" if out.detail else "")
            + (f" (action {out.action_id}, journal {engine.journal.path})" if out.action_id else "")
        )


# --- daemon ---------------------------------------------------------------------------------------


def start_sources(args: argparse.Namespace, engine: Engine, metrics: ControllerMetrics, stop: threading.Event):
    """Start the webhook/metrics server and, with --alertmanager.url, the poller.

    Returns (webhook server, poller thread or None).  The one place the
    daemon is wired to ``controller.sources``.
    """
    from .sources.pull import PullSource, pull_settings_from_args
    from .sources.webhook import serve, settings_from_args

    pull_settings = pull_settings_from_args(args)
    register_self_metrics(metrics.registry)
    server = serve(settings_from_args(args), engine, metrics, ready=lambda: engine.ready)
    poller = None
    if pull_settings is not None:
        source = PullSource(pull_settings, engine, metrics)
        poller = threading.Thread(target=source.run, args=(stop,), name="memhp-pull", daemon=True)
        poller.start()
    return server, poller


def start_event_path(cfg, paths: Paths, engine: Engine, metrics: ControllerMetrics):
    """With an ``event: memory-added`` rule: the uevent listener and the thread onlining
    hot-added blocks (controller/hotadd.py); (None, None) without one."""
    import time

    from .hotadd import HotAdd, event_rule
    from .sources.uevents import UeventSource

    rule = event_rule(cfg)
    if rule is None:
        return None, None
    hot = HotAdd(cfg, rule, paths, engine.executor, engine.guards, metrics, engine.stop_event).start()
    source = UeventSource(hot.blocks, metrics, time.monotonic).start()
    log.info("event path on: rule %s onlines hot-added blocks (settle %.3fs)", rule.name, cfg.controller.event_settle)
    return hot, source


def run_once(args: argparse.Namespace, engine: Engine, metrics: ControllerMetrics) -> int:
    from .sources.pull import P_SUCCESS, PullSource, pull_settings_from_args

    settings = pull_settings_from_args(args)
    if settings is None:
        print("memhp-controller: --once needs --alertmanager.url (one pull-mode reconcile)", file=sys.stderr)
        return EXIT_USAGE
    result = PullSource(settings, engine, metrics).poll_once()
    log.info(
        "poll: %s (%d firing, %d resolved)%s",
        result.result,
        result.firing,
        result.resolved,
        f": {result.error}" if result.error else "",
    )
    if not engine.wait_idle(args.once_timeout):
        log.error("actions still running after %.0fs", args.once_timeout)
        return EXIT_FAILED
    return EXIT_OK if result.result == P_SUCCESS else EXIT_FAILED


def _log_start(cfg, engine: Engine) -> None:
    """The effective configuration as one line, and what in it may keep the controller from acting."""
    if not cfg.rules:
        log.warning("no rules configured: alerts will be received but nothing will act")
    effective = cfg.to_dict()
    effective["guards"]["dry_run"] = engine.dry_run
    effective["controller"]["journal"] = engine.journal.path
    log.info("effective configuration: %s", json.dumps(effective, sort_keys=True))
    for w in policy_lint.warnings(cfg):
        log.warning("policy: %s", w)


def run_daemon(args: argparse.Namespace, cfg, paths: Paths, parser: argparse.ArgumentParser) -> int:
    from .sources.pull import PullConfigError
    from .sources.webhook import WebhookConfigError

    metrics = ControllerMetrics()
    engine = Engine(cfg, paths, metrics, dry_run=True if args.dry_run else None, journal_path=args.journal_path)
    _log_start(cfg, engine)
    try:
        engine.open()
    except (OSError, JournalError) as e:
        log.error("cannot open the journal %s: %s", engine.journal.path, e)
        return EXIT_USAGE
    for r in engine.reconciled:
        log.warning("reconciled interrupted %s of memory%s: %s", r.op, r.block, r.outcome)
    engine.start()
    stop = threading.Event()
    if args.once:
        try:
            return run_once(args, engine, metrics)
        except PullConfigError as e:
            print(f"memhp-controller: {e}", file=sys.stderr)
            return EXIT_USAGE
        finally:
            engine.close()
    try:
        server, poller = start_sources(args, engine, metrics, stop)
    except (WebhookConfigError, PullConfigError) as e:
        engine.close()
        print(f"memhp-controller: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        engine.close()
        print(f"memhp-controller: cannot listen on {args.web_listen_address}: {e.strerror}", file=sys.stderr)
        return EXIT_USAGE

    hot, uevents = start_event_path(cfg, paths, engine, metrics)

    def on_signal(signum, frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("controller running (dry-run: %s); %d rule(s)", engine.dry_run, len(cfg.rules))
    while not stop.wait(3600):
        pass
    server.shutdown()
    if uevents is not None:
        uevents.stop()
    engine.close()
    if hot is not None:
        hot.join(5)
    if poller is not None:
        poller.join(5)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
