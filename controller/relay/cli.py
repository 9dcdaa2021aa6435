"""``memhp-relay``: the fan-out relay between Alertmanager and the controllers of a fleet.

memhp-relay --web.listen-address :10303 --web.auth.bearer-token-file /etc/memhp/relay-token \\
    --target.template 'http://{instance:host}:10302/webhook/alertmanager' \\
    --target.bearer-token-file /etc/memhp/controller-token
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from memhp.controller.sources.webhook import WebhookConfigError, add_webhook_arguments, settings_from_args
from memhp.units import parse_duration
from memhp.web.secrets import SecretFileError

from .delivery import Deliverer, DeliverySettings
from .fanout import DEFAULT_PARALLELISM, DEFAULT_WORKERS
from .metrics import RelayMetrics
from .receiver import (
    DEFAULT_LISTEN_ADDRESS,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_CONNECTIONS,
    MAX_NOTIFICATION_ALERTS,
    FanOutSink,
    serve,
)
from .template import DEFAULT_TEMPLATE, TargetTemplate, TemplateError

log = logging.getLogger("memhp.relay")

EXIT_OK = 0
EXIT_USAGE = 2

DESCRIPTION = f"""\
Fan Alertmanager's webhooks out to the memhp-controller on each node.

Alertmanager sends every memhp alert to one URL (this relay, any number of
stateless replicas behind it, path /webhook/alertmanager); the relay sends
each alert on to the controller its labels name, through --target.template
(default {DEFAULT_TEMPLATE}):
{{label}} is the label's value, {{label:host}} its host part (port dropped),
{{label|text}} falls back to text when the label is absent.  It answers 200
once every target has accepted its alerts, 503 (Alertmanager retries)
otherwise.  Metrics on /metrics of the listen address.

Defaults differ from memhp-controller's: --web.listen-address
{DEFAULT_LISTEN_ADDRESS}, --web.max-concurrency {DEFAULT_MAX_CONCURRENCY},
--web.max-connections {DEFAULT_MAX_CONNECTIONS}, --web.max-body-bytes
{DEFAULT_MAX_BODY_BYTES}.  A notification may hold up to
{MAX_NOTIFICATION_ALERTS:,} alerts (within --web.max-body-bytes); each controller
gets its alerts in POSTs of at most 1,000 alerts and 1 MiB.
"""


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memhp-relay", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--log.level", dest="log_level", default="info", choices=("debug", "info", "warning", "error"))
    add_webhook_arguments(parser)
    parser.set_defaults(
        web_listen_address=DEFAULT_LISTEN_ADDRESS,
        web_max_concurrency=DEFAULT_MAX_CONCURRENCY,
        web_max_connections=DEFAULT_MAX_CONNECTIONS,
        web_max_body_bytes=DEFAULT_MAX_BODY_BYTES,
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
        type=parse_duration,
        default=d.deadline,
        metavar="DURATION",
        help=f"longest time to deliver to one target, retries and queueing included (default {d.deadline:g}s)",
    )
    g.add_argument(
        "--target.attempt-timeout",
        dest="target_attempt_timeout",
        type=parse_duration,
        default=d.attempt_timeout,
        metavar="DURATION",
        help=f"total time for one HTTP request to a target (default {d.attempt_timeout:g}s)",
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
        "--target.tls.ca-file", dest="target_tls_ca_file", metavar="FILE",
        help="CA bundle to verify https controllers (default: the system's)",
    )  # fmt: skip
    return parser


def build(args: argparse.Namespace, metrics: RelayMetrics) -> FanOutSink:
    template = TargetTemplate(args.target_template)
    settings = DeliverySettings(
        deadline=args.target_deadline,
        attempt_timeout=args.target_attempt_timeout,
        max_attempts=args.target_max_attempts,
        queue_size=args.target_queue_size,
        bearer_token_file=args.target_bearer_token_file,
        basic_auth_file=args.target_basic_auth_file,
        ca_file=args.target_tls_ca_file,
    )
    return FanOutSink(
        template,
        Deliverer(settings, metrics),
        metrics,
        parallelism=args.target_parallelism,
        workers=args.target_workers,
    )


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    metrics = RelayMetrics()
    try:
        sink = build(args, metrics)
        web_settings = settings_from_args(args)
        if web_settings.read_timeout <= args.target_deadline:
            log.info("the request deadline (--web.read-timeout) bounds receiving only; delivery has its own")
        server = serve(web_settings, sink, metrics)
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
    log.info("relay running; targets from %s", sink.template.text)
    while not stop.wait(3600):
        pass
    server.shutdown()
    sink.close()
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
