"""The ``--web.*`` flags both programs share: the web config file and the limits."""

from __future__ import annotations

import argparse

from memhp.program import duration
from memhp.units import format_duration

from .server import Limits


def add_web_config_argument(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    group.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="FILE",
        default=None,
        help="exporter-toolkit web configuration (YAML): tls_server_config, basic_auth_users (bcrypt), "
        "http_server_config.headers; re-read when it changes",
    )


def add_limit_arguments(
    group: argparse._ArgumentGroup | argparse.ArgumentParser, defaults: Limits, *, body: bool = True
) -> None:
    group.add_argument(
        "--web.header-timeout",
        dest="web_header_timeout",
        type=duration,
        default=format_duration(defaults.header_timeout),
        metavar="DURATION",
        help="time for a new connection's TLS handshake, request line and headers (default %(default)s); 408 after",
    )
    group.add_argument(
        "--web.read-timeout",
        dest="web_read_timeout",
        type=duration,
        default=format_duration(defaults.read_timeout),
        metavar="DURATION",
        help="total time to receive one request, TLS handshake included (default %(default)s); also bounds "
        "sending the answer, which holds no request slot",
    )
    group.add_argument(
        "--web.max-connections",
        dest="web_max_connections",
        type=int,
        default=defaults.max_connections,
        metavar="N",
        help="open connections at most (default %(default)s); at the bound the oldest one already answered "
        "or still sending its headers is closed; a few more are kept for /-/healthy alone",
    )
    group.add_argument(
        "--web.max-concurrency",
        dest="web_max_concurrency",
        type=int,
        default=defaults.max_concurrency,
        metavar="N",
        help="authenticated requests served at once (default %(default)s); 503 above",
    )
    if body:
        group.add_argument(
            "--web.max-body-bytes",
            dest="web_max_body_bytes",
            type=int,
            default=defaults.max_body_bytes,
            metavar="N",
            help="largest request body accepted (default %(default)s); 413 above",
        )


def limits_from_args(args: argparse.Namespace, defaults: Limits) -> Limits:
    return Limits(
        header_timeout=args.web_header_timeout,
        read_timeout=args.web_read_timeout,
        max_connections=args.web_max_connections,
        max_concurrency=args.web_max_concurrency,
        max_body_bytes=getattr(args, "web_max_body_bytes", defaults.max_body_bytes),
        max_header_bytes=defaults.max_header_bytes,
        max_headers=defaults.max_headers,
    )
