"""``memhp-relay``: the fan-out relay between Alertmanager and the controllers of a fleet.

memhp-relay --web.listen-address :10303 --web.auth.bearer-token-file /etc/memhp/relay-token \\
    --target.template 'https://{instance:host}:10302/webhook/alertmanager' \\
    --target.allow .nodes.example.com --target.tls.ca-file /etc/memhp/fleet-ca.crt \\
    --target.token-key-file /etc/memhp/controller-token-key

memhp-relay derive-token HOST... --target.token-key-file FILE   (a node's own controller token)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading

from memhp.controller.sources.webhook import WebhookConfigError, add_webhook_arguments, settings_from_args
from memhp.program import ArgumentParser, add_common_flags, configure_logging, duration, guarded
from memhp.selfmetrics import register_self_metrics
from memhp.units import format_duration
from memhp.web.secrets import SecretFileError, read_regular_file

from .delivery import Deliverer, DeliverySettings
from .fanout import DEFAULT_PARALLELISM, DEFAULT_WORKERS
from .hosts import AllowList, BadHost, host_of
from .metrics import RelayMetrics
from .receiver import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_LISTEN_BACKLOG,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    MAX_NOTIFICATION_ALERTS,
    FanOutSink,
    serve,
)
from .template import DEFAULT_TEMPLATE, TargetTemplate, TemplateError
from .tokens import derive_token, parse_token_key

log = logging.getLogger("memhp.relay")

EXIT_OK = 0
EXIT_USAGE = 2

DESCRIPTION = f"""\
Fan Alertmanager's webhooks out to the memhp-controller on each node.

Alertmanager sends every memhp alert to one URL (this relay, any number of
stateless replicas behind it, path /webhook/alertmanager); the relay sends
each alert on to the controller its labels name, through --target.template
(default {DEFAULT_TEMPLATE}):
Labels fill in the template's host only (scheme, port and path are the
template's): {{label:host}} is the host of a host, host:port, [v6] or
[v6]:port value; {{label}} a piece of a host name (letters, digits, '.', '-');
{{label|text}} falls back to text when the label is absent.  Whenever the
relay sends credentials, --target.allow must list where they may go (or
--target.allow-any say that anywhere will do).  It answers 200
once every target has accepted its alerts, 503 (Alertmanager retries)
otherwise.  Metrics on /metrics of the listen address.

`memhp-relay derive-token HOST... --target.token-key-file FILE` prints the
per-node token the relay sends each HOST with --target.token-key-file.

Defaults differ from memhp-controller's: --web.listen-address
{DEFAULT_LISTEN_ADDRESS}, --web.max-concurrency {DEFAULT_MAX_CONCURRENCY},
--web.max-connections {DEFAULT_MAX_CONNECTIONS}, --web.max-body-bytes
{DEFAULT_MAX_BODY_BYTES}.  A notification may hold up to
{MAX_NOTIFICATION_ALERTS:,} alerts (within --web.max-body-bytes); each controller
gets its alerts in POSTs of at most 1,000 alerts and 1 MiB.
"""


def get_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="memhp-relay", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_flags(parser, "memhp-relay")
    add_webhook_arguments(parser)
    parser.set_defaults(
        web_listen_address=DEFAULT_LISTEN_ADDRESS,
        web_max_concurrency=DEFAULT_MAX_CONCURRENCY,
        web_max_connections=DEFAULT_MAX_CONNECTIONS,
        web_max_body_bytes=DEFAULT_MAX_BODY_BYTES,
    )
    parser.add_argument(
        "--web.listen-backlog",
        dest="web_listen_backlog",
        type=int,
        default=DEFAULT_LISTEN_BACKLOG,
        metavar="N",
        help="connections the kernel holds until the relay accepts them (default %(default)s, capped by "
        "net.core.somaxconn); size it for one notification per node divided among the replicas",
    )
    d = DeliverySettings()
    g = parser.add_argument_group("targets (the controllers)")
    g.add_argument(
        "--target.template",
        dest="target_template",
        default=DEFAULT_TEMPLATE,
        metavar="URL",
        help=f"URL of an alert's controller, from its labels (default {DEFAULT_TEMPLATE})",
    )
    g.add_argument(
        "--target.deadline",
        dest="target_deadline",
        type=duration,
        default=format_duration(d.deadline),
        metavar="DURATION",
        help="longest time to deliver to one target, retries and queueing included (default %(default)s)",
    )
    g.add_argument(
        "--target.attempt-timeout",
        dest="target_attempt_timeout",
        type=duration,
        default=format_duration(d.attempt_timeout),
        metavar="DURATION",
        help="total time for one HTTP request to a target (default %(default)s)",
    )
    g.add_argument(
        "--target.max-attempts",
        dest="target_max_attempts",
        type=int,
        default=d.max_attempts,
        metavar="N",
        help=f"attempts per delivery (default {d.max_attempts})",
    )
    g.add_argument(
        "--target.queue-size",
        dest="target_queue_size",
        type=int,
        default=d.queue_size,
        metavar="N",
        help=f"deliveries waiting per target besides the one in flight; 503 above (default {d.queue_size})",
    )
    g.add_argument(
        "--target.parallelism",
        dest="target_parallelism",
        type=int,
        default=DEFAULT_PARALLELISM,
        metavar="N",
        help="deliveries at once for one notification with several targets, its own thread included "
        f"(default {DEFAULT_PARALLELISM})",
    )
    g.add_argument(
        "--target.workers",
        dest="target_workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help="threads shared by all notifications, lent to those with several targets; "
        f"none free: a notification goes on with its own thread (default {DEFAULT_WORKERS})",
    )
    g.add_argument(
        "--target.bearer-token-file", dest="target_bearer_token_file", metavar="FILE",
        help="send 'Authorization: Bearer <token>' read from FILE to the controllers",
    )  # fmt: skip
    g.add_argument(
        "--target.basic-auth-file", dest="target_basic_auth_file", metavar="FILE",
        help="send basic auth from FILE (one line 'user:password') to the controllers",
    )  # fmt: skip
    g.add_argument(
        "--target.token-key-file", dest="target_token_key_file", metavar="FILE",
        help="send each controller its own token, hex(HMAC-SHA256(key, host)), key read from FILE "
        "(see 'memhp-relay derive-token')",
    )  # fmt: skip
    g.add_argument(
        "--target.tls.ca-file", dest="target_tls_ca_file", metavar="FILE",
        help="CA bundle to verify https controllers; their certificate must name the host reached "
        "(default: the system's CAs)",
    )  # fmt: skip
    g.add_argument(
        "--target.allow", dest="target_allow", action="append", default=[], metavar="RULES",
        help="hosts the relay may send to: '.suffix' of host names, exact host names, CIDRs; repeatable "
        "or comma-separated; required with credentials",
    )  # fmt: skip
    g.add_argument(
        "--target.allow-any", dest="target_allow_any", action="store_true",
        help="send credentials to any host the alerts' labels name (unsafe: anyone who can post an alert "
        "to Alertmanager gets them)",
    )  # fmt: skip
    return parser


def allow_list(args: argparse.Namespace, sends_credentials: bool) -> AllowList | None:
    """The allow-list the template enforces, None for none; ValueError for a missing or bad one."""
    allow = AllowList.parse(args.target_allow)
    if args.target_allow_any:
        if allow:
            raise ValueError("give --target.allow or --target.allow-any, not both")
        log.warning(
            "--target.allow-any: credentials go to ANY host an alert's labels name; anyone who can post an "
            "alert to Alertmanager can have them sent to a host of their choice"
        )
        return None
    if sends_credentials and not allow:
        raise ValueError(
            "the relay sends credentials to the controllers: list where with --target.allow "
            "(host-name suffixes, CIDRs), or give --target.allow-any"
        )
    return allow or None


def build(args: argparse.Namespace, metrics: RelayMetrics) -> FanOutSink:
    settings = DeliverySettings(
        deadline=args.target_deadline,
        attempt_timeout=args.target_attempt_timeout,
        max_attempts=args.target_max_attempts,
        queue_size=args.target_queue_size,
        bearer_token_file=args.target_bearer_token_file,
        basic_auth_file=args.target_basic_auth_file,
        token_key_file=args.target_token_key_file,
        ca_file=args.target_tls_ca_file,
    )
    template = TargetTemplate(args.target_template, allow_list(args, settings.sends_credentials))
    return FanOutSink(
        template,
        Deliverer(settings, metrics),
        metrics,
        parallelism=args.target_parallelism,
        workers=args.target_workers,
    )


def derive_token_main(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="memhp-relay derive-token",
        description="Print each HOST's controller token (one line each): what the relay sends with "
        "--target.token-key-file, for that node's --web.auth.bearer-token-file.  HOST is the host "
        "the target template makes for the node (a name, an IPv4 address or [IPv6]; a port is ignored).",
    )
    parser.add_argument("hosts", nargs="+", metavar="HOST")
    parser.add_argument("--target.token-key-file", dest="target_token_key_file", metavar="FILE", required=True)
    args = parser.parse_args(argv)
    try:
        data, _ = read_regular_file(args.target_token_key_file)
        key = parse_token_key(data, args.target_token_key_file)
        tokens = [derive_token(key, host_of(h)) for h in args.hosts]
    except (SecretFileError, BadHost) as e:
        print(f"memhp-relay derive-token: {e}", file=sys.stderr)
        return EXIT_USAGE
    for token in tokens:
        print(token)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["derive-token"]:
        return guarded("memhp-relay derive-token", lambda: derive_token_main(argv[1:]))
    return guarded("memhp-relay", lambda: _main(argv))


def _main(argv: list[str]) -> int:
    args = get_parser().parse_args(argv)
    configure_logging(args)
    metrics = RelayMetrics()
    register_self_metrics(metrics.registry)
    started = threading.Event()
    try:
        sink = build(args, metrics)
        web_settings = dataclasses.replace(settings_from_args(args), listen_backlog=args.web_listen_backlog)
        if web_settings.read_timeout <= args.target_deadline:
            log.info("the request deadline (--web.read-timeout) bounds receiving only; delivery has its own")
        server = serve(web_settings, sink, metrics, ready=started.is_set)
    except (TemplateError, ValueError, SecretFileError, WebhookConfigError) as e:
        print(f"memhp-relay: {e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:
        print(f"memhp-relay: cannot listen on {args.web_listen_address}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("signal %d: shutting down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    allow = sink.template.allow
    started.set()
    log.info(
        "relay running; targets from %s, allowed: %s", sink.template.text, allow.describe() if allow else "any host"
    )
    while not stop.wait(3600):
        pass
    server.shutdown()
    sink.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
