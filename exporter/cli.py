"""``memhp-exporter``: Prometheus exporter for Linux memory hot(un)plug."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from memhp import __version__
from memhp.program import ArgumentParser, UsageError, add_common_flags, configure_logging, guarded
from memhp.selfmetrics import register_self_metrics
from memhp.web import Limits, SecretFileError, tls_contexts, web_config
from memhp.web.flags import add_limit_arguments, add_web_config_argument, limits_from_args

from .collectors import (
    REGISTERED,
    BuildContext,
    FlagValues,
    MemhpCollector,
    SubCollector,
    all_flags,
    build_enabled,
)
from .exposition import render
from .kernel.fsread import ParseErrors
from .kernel.paths import Paths
from .server import DEFAULT_LIMITS, parse_listen_address, serve

log = logging.getLogger(__name__)

# 9100-9999 is fully allocated in Prometheus' default port list.
DEFAULT_LISTEN = ":10301"


def _version() -> str:
    # Not importlib.metadata: it costs ~20 ms per --once run.
    return __version__


@dataclass(frozen=True)
class ExporterConfig:
    paths: Paths
    listen: str = DEFAULT_LISTEN
    telemetry_path: str = "/metrics"
    tls_cert: str | None = None
    tls_key: str | None = None
    web_config_file: str | None = None
    limits: Limits = DEFAULT_LIMITS
    collectors: frozenset[str] = field(
        default_factory=lambda: frozenset(n for n, s in REGISTERED.items() if s.default_enabled)
    )
    # The collectors' own --collector.NAME.* flags; one left out runs with its default.
    flags: FlagValues = field(default_factory=dict)
    once: bool = False
    once_output: str | None = None


def get_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="memhp-exporter",
        description="Prometheus exporter for Linux memory hot(un)plug: memory blocks, zones, the MOVABLE:KERNEL "
        "ratio, offline failures and uevents, read from sysfs and procfs. It never writes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--web.listen-address",
        dest="listen",
        default=DEFAULT_LISTEN,
        help="Address to serve metrics on, HOST:PORT (empty host: all interfaces).",
    )
    p.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", help="Path of the metrics.")
    add_web_config_argument(p)
    p.add_argument(
        "--web.tls.cert-file",
        dest="tls_cert",
        help="TLS certificate (PEM); serve HTTPS with the key. Deprecated: use tls_server_config in --web.config.file.",
    )
    p.add_argument("--web.tls.key-file", dest="tls_key", help="TLS private key (PEM). Deprecated, as above.")
    add_limit_arguments(p, DEFAULT_LIMITS, body=False)
    p.add_argument("--path.sysfs", dest="sysfs", default="/sys", help="sysfs mount point.")
    p.add_argument("--path.procfs", dest="procfs", default="/proc", help="procfs mount point.")
    p.add_argument(
        "--path.kmsg",
        dest="kmsg",
        default="/dev/kmsg",
        help="Kernel log device (or a file of log lines) for offline failures.",
    )
    for spec in REGISTERED.values():
        p.add_argument(
            f"--collector.{spec.name}",
            dest=f"collector_{spec.name}",
            action=argparse.BooleanOptionalAction,
            default=spec.default_enabled,
            help=f"Collector {spec.name}: {spec.help}.",
        )
    for flag in all_flags():
        flag.add_to(p)
    add_common_flags(p, "memhp-exporter")
    p.add_argument(
        "--once",
        action="store_true",
        help="Print one scrape to stdout (or --once.output) and exit; event collectors "
        "(offline_failures, uevents) are off in this mode.",
    )
    p.add_argument(
        "--once.output",
        dest="once_output",
        help="With --once: write atomically to this file (for node_exporter's textfile collector).",
    )
    return p


def config_from_args(args: argparse.Namespace) -> ExporterConfig:
    enabled = frozenset(n for n in REGISTERED if getattr(args, f"collector_{n}"))
    flags = {flag: flag.check(getattr(args, flag.dest)) for flag in all_flags()}
    if bool(args.tls_cert) != bool(args.tls_key):
        raise ValueError("--web.tls.cert-file and --web.tls.key-file go together")
    if args.once_output and not args.once:
        raise ValueError("--once.output needs --once")
    if args.once_output and not os.path.isdir(os.path.dirname(os.path.abspath(args.once_output))):
        raise ValueError(f"--once.output {args.once_output}: its directory does not exist")
    parse_listen_address(args.listen)
    if not args.telemetry_path.startswith("/"):
        raise ValueError("--web.telemetry-path must start with /")
    limits = limits_from_args(args, DEFAULT_LIMITS)
    problems = limits.validate()
    if problems:
        raise ValueError(problems[0])
    if not args.once:
        try:  # a bad web config file is a usage error at start, like a bad flag
            tls_contexts(web_config(args.web_config_file), args.tls_cert, args.tls_key)
        except SecretFileError as e:
            raise ValueError(str(e)) from None
    return ExporterConfig(
        paths=Paths(args.sysfs, args.procfs, args.kmsg),
        listen=args.listen,
        telemetry_path=args.telemetry_path,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        web_config_file=args.web_config_file,
        limits=limits,
        collectors=enabled,
        flags=flags,
        once=args.once,
        once_output=args.once_output,
    )


def build_collectors(cfg: ExporterConfig, errors: ParseErrors) -> list[SubCollector]:
    """Instantiate the enabled collectors, starting background watchers unless --once."""
    ctx = BuildContext(paths=cfg.paths, errors=errors, once=cfg.once, enabled=cfg.collectors, flags=cfg.flags)
    return build_enabled(cfg.collectors, ctx)


def build_registry(cfg: ExporterConfig, errors: ParseErrors | None = None) -> tuple[CollectorRegistry, MemhpCollector]:
    errors = errors or ParseErrors()
    registry = CollectorRegistry()
    collector = MemhpCollector(cfg.paths, build_collectors(cfg, errors), errors, _version())
    registry.register(collector)
    return registry, collector


def write_atomically(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".memhp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_output(path: str, data: bytes) -> None:
    try:
        write_atomically(path, data)
    except OSError as e:
        raise UsageError(f"cannot write --once.output {path}: {e.strerror or e}") from None


def main(argv: list[str] | None = None) -> int:
    return guarded("memhp-exporter", lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    configure_logging(args)
    try:
        cfg = config_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    # kill -USR1: every thread's stack to the log, for a scrape that hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    registry, collector = build_registry(cfg)
    if cfg.once:
        _, data = render(registry, None)
        if cfg.once_output:
            write_output(cfg.once_output, data)
        else:
            sys.stdout.buffer.write(data)
        return 0
    return run_server(cfg, registry, collector)


def warm_up(registry: CollectorRegistry, ready: threading.Event) -> None:
    """Ready once the first scrape's work is done (the block snapshot read, the sources checked)."""
    try:
        render(registry, None)
    except Exception:
        log.exception("first collection failed")
    ready.set()


def run_server(cfg: ExporterConfig, registry: CollectorRegistry, collector: MemhpCollector) -> int:
    log.info(
        "starting memhp-exporter %s: listen=%s%s sysfs=%s procfs=%s kmsg=%s collectors=%s %s tls=%s",
        _version(),
        cfg.listen,
        cfg.telemetry_path,
        cfg.paths.sysfs,
        cfg.paths.procfs,
        cfg.paths.kmsg,
        ",".join(sorted(cfg.collectors)),
        " ".join(f"{flag.name}={value}" for flag, value in cfg.flags.items()),
        "flags" if cfg.tls_cert else ("web config" if cfg.web_config_file else "off"),
    )
    collector.source_watch.check()  # a wrong --path.* is said at start, not at the first scrape
    register_self_metrics(registry)
    ready = threading.Event()
    try:
        httpd = serve(
            registry,
            cfg.listen,
            cfg.telemetry_path,
            cfg.tls_cert,
            cfg.tls_key,
            web_config_file=cfg.web_config_file,
            limits=cfg.limits,
            ready=ready.is_set,
        )
    except (OSError, SecretFileError) as e:
        collector.close()
        raise UsageError(f"cannot listen on {cfg.listen}: {getattr(e, 'strerror', None) or e}") from None
    log.info("listening on %s%s", cfg.listen, cfg.telemetry_path)
    threading.Thread(target=warm_up, args=(registry, ready), name="memhp-warm-up", daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("shutting down")
    httpd.shutdown()
    collector.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
