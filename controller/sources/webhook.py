"""Alertmanager webhook receiver (payload version 4), plus /metrics, /-/healthy and /-/ready.

Thin routes on the shared web layer (:mod:`memhp.web`: connection and
request limits, deadlines, TLS, authentication, escaping), with the payload
schema in :mod:`.alertmanager_payload`.  What is specific here:

* authentication is required by default: bearer token and/or basic auth from
  files, or ``basic_auth_users`` of ``--web.config.file``; ``--web.no-auth``
  only on loopback;
* the sink's answers mapped to status codes Alertmanager acts on.

Status codes (see docs/controller.md): 200 accepted by the sink; 400 invalid
payload; 401 credentials; 404/405 path or method; 408 too slow; 411/413 length;
429 sink full; 503 sink unavailable or overloaded.  Alertmanager's webhook
notifier retries 5xx within a flush and, since its notification log is only
updated on success, sends a refused group again at its next ``group_interval``.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from memhp.controller.alert import FIRING, Alert, AlertSink, SinkFull, SinkUnavailable
from memhp.web import (
    Authenticator,
    Limits,
    ListenAddressError,
    Request,
    Response,
    Route,
    SecretFileError,
    WebServer,
    is_loopback_host,
    tls_contexts,
    web_config,
)
from memhp.web import server as web
from memhp.web.address import split_host_port as _split_host_port
from memhp.web.auth import AUTH_BUSY, AUTH_FAILED, AUTH_MISSING
from memhp.web.flags import add_limit_arguments, add_web_config_argument, limits_from_args
from memhp.web.probes import probe_routes

from .alertmanager_payload import (
    MAX_ALERTS,
    R_BAD_JSON,
    R_BAD_VERSION,
    R_INVALID,
    PayloadError,
    parse_webhook_payload,
)

log = logging.getLogger(__name__)

DEFAULT_PORT = 10302  # next to the exporter's 10301; outside 9100-9999, which Prometheus' port list has filled
DEFAULT_LISTEN_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
WEBHOOK_PATH = "/webhook/alertmanager"
METRICS_PATH = "/metrics"
DEFAULT_LIMITS = Limits(header_timeout=5.0, read_timeout=10.0, max_connections=64, max_concurrency=16)
DEFAULT_MAX_BODY_BYTES = DEFAULT_LIMITS.max_body_bytes
DEFAULT_READ_TIMEOUT = DEFAULT_LIMITS.read_timeout
DEFAULT_MAX_CONCURRENCY = DEFAULT_LIMITS.max_concurrency
SUPPORTED_VERSION = "4"
RETRY_AFTER_SECONDS = 5

# requests_rejected{reason} values: the payload's, the web layer's, the sink's.
R_TOO_LARGE = web.R_TOO_LARGE
R_READ_TIMEOUT = web.R_READ_TIMEOUT
R_OVERLOADED = web.R_OVERLOADED
R_QUEUE_FULL = "queue_full"
R_SINK_UNAVAILABLE = "sink_unavailable"
R_SINK_ERROR = "sink_error"

# Refusals an operator must hear about (a misconfigured or incompatible sender); the
# others (probes, slow or overloaded clients) are counted and logged at debug level.
# Either way the lines are escaped and rate-limited by the web layer.
_WORTH_A_WARNING = frozenset(
    {R_BAD_JSON, R_BAD_VERSION, R_INVALID, R_TOO_LARGE, AUTH_MISSING, AUTH_FAILED, R_SINK_ERROR, web.R_INTERNAL}
)
_ZEROED_REASONS = (
    R_BAD_JSON,
    R_BAD_VERSION,
    R_INVALID,
    R_TOO_LARGE,
    AUTH_MISSING,
    AUTH_FAILED,
    AUTH_BUSY,
    R_READ_TIMEOUT,
    R_QUEUE_FULL,
    R_SINK_UNAVAILABLE,
    R_OVERLOADED,
    web.R_CONNECTION_LIMIT,
)

__all__ = [
    "DEFAULT_LISTEN_ADDRESS",
    "DEFAULT_PORT",
    "WEBHOOK_PATH",
    "PayloadError",
    "WebhookConfigError",
    "WebhookServer",
    "WebhookSettings",
    "add_webhook_arguments",
    "parse_webhook_payload",
    "serve",
    "settings_from_args",
    "validate_settings",
]


class WebhookConfigError(ValueError):
    """The settings cannot be served safely; the message says why."""


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class WebhookSettings:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    bearer_token_file: str | None = None
    basic_auth_file: str | None = None
    no_auth: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_body_bytes: int = DEFAULT_LIMITS.max_body_bytes
    read_timeout: float = DEFAULT_LIMITS.read_timeout
    max_concurrency: int = DEFAULT_LIMITS.max_concurrency
    web_config_file: str | None = None
    header_timeout: float = DEFAULT_LIMITS.header_timeout
    max_connections: int = DEFAULT_LIMITS.max_connections
    listen_backlog: int = DEFAULT_LIMITS.listen_backlog

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)

    @property
    def limits(self) -> Limits:
        return Limits(
            header_timeout=self.header_timeout,
            read_timeout=self.read_timeout,
            max_connections=self.max_connections,
            max_concurrency=self.max_concurrency,
            max_body_bytes=self.max_body_bytes,
            listen_backlog=self.listen_backlog,
        )


def split_host_port(address: str) -> tuple[str, int]:
    try:
        return _split_host_port(address)
    except ListenAddressError as e:
        raise WebhookConfigError(str(e)) from None


def _has_config_users(settings: WebhookSettings) -> bool:
    if not settings.web_config_file:
        return False
    try:
        return web_config(settings.web_config_file)().users is not None
    except SecretFileError as e:
        raise WebhookConfigError(str(e)) from None


def validate_settings(settings: WebhookSettings) -> None:
    """Raise WebhookConfigError for any setting that would be unsafe or unusable."""
    host, _ = split_host_port(settings.listen_address)
    has_auth = bool(settings.bearer_token_file or settings.basic_auth_file) or _has_config_users(settings)
    if settings.no_auth and has_auth:
        raise WebhookConfigError("--web.no-auth contradicts the auth file(s) given")
    if not has_auth and not settings.no_auth:
        raise WebhookConfigError(
            "authentication is required: give --web.auth.bearer-token-file, --web.auth.basic-auth-file or "
            "basic_auth_users in --web.config.file (or --web.no-auth, on a loopback address only)"
        )
    try:
        loopback = is_loopback_host(host)
    except ListenAddressError as e:
        raise WebhookConfigError(str(e)) from None
    if settings.no_auth and not loopback:
        raise WebhookConfigError(
            f"refusing to listen on non-loopback address {settings.listen_address!r} without authentication"
        )
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise WebhookConfigError("TLS needs both --web.tls.cert-file and --web.tls.key-file")
    problems = settings.limits.validate()
    if problems:
        raise WebhookConfigError(problems[0])


def add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("webhook receiver and metrics endpoint")
    g.add_argument(
        "--web.listen-address",
        dest="web_listen_address",
        default=DEFAULT_LISTEN_ADDRESS,
        metavar="HOST:PORT",
        help=f"address to listen on (default {DEFAULT_LISTEN_ADDRESS}); "
        "an empty host listens on every interface and needs authentication",
    )
    add_web_config_argument(g)
    g.add_argument(
        "--web.auth.bearer-token-file",
        dest="web_auth_bearer_token_file",
        metavar="FILE",
        help="file holding the bearer token Alertmanager must send (one line)",
    )
    g.add_argument(
        "--web.auth.basic-auth-file",
        dest="web_auth_basic_auth_file",
        metavar="FILE",
        help="file holding one line 'user:password' for HTTP basic auth",
    )
    g.add_argument(
        "--web.no-auth",
        dest="web_no_auth",
        action="store_true",
        help="serve without authentication (refused unless the listen address is loopback)",
    )
    g.add_argument(
        "--web.tls.cert-file",
        dest="web_tls_cert_file",
        metavar="FILE",
        help="PEM certificate (chain) to serve HTTPS (older form of tls_server_config in --web.config.file)",
    )
    g.add_argument("--web.tls.key-file", dest="web_tls_key_file", metavar="FILE", help="PEM private key")
    add_limit_arguments(g, DEFAULT_LIMITS)


def settings_from_args(args: argparse.Namespace) -> WebhookSettings:
    limits = limits_from_args(args, DEFAULT_LIMITS)
    settings = WebhookSettings(
        listen_address=args.web_listen_address,
        bearer_token_file=args.web_auth_bearer_token_file,
        basic_auth_file=args.web_auth_basic_auth_file,
        no_auth=args.web_no_auth,
        tls_cert_file=args.web_tls_cert_file,
        tls_key_file=args.web_tls_key_file,
        max_body_bytes=limits.max_body_bytes,
        read_timeout=limits.read_timeout,
        max_concurrency=limits.max_concurrency,
        web_config_file=args.web_config_file,
        header_timeout=limits.header_timeout,
        max_connections=limits.max_connections,
    )
    validate_settings(settings)
    return settings


# --------------------------------------------------------------------------- routes


class WebhookMetrics(Protocol):
    """What the server counts in: the controller's metrics and the relay's both have it."""

    @property
    def registry(self) -> CollectorRegistry: ...  # served on /metrics

    @property
    def requests_rejected(self) -> Counter: ...  # labels: reason

    @property
    def alerts_received(self) -> Counter: ...  # labels: source, status


def _json_document(status: int, reason: str | None, message: str, extra: dict[str, Any] | None) -> tuple[str, bytes]:
    doc: dict[str, Any] = {"status": "error" if status >= 400 else "success", "message": message}
    if reason is not None:
        doc["reason"] = reason
    if extra:
        doc.update(extra)
    return "application/json", (json.dumps(doc) + "\n").encode()


def _routes(sink: AlertSink, metrics: WebhookMetrics, max_alerts: int, ready: Callable[[], bool]) -> dict[str, Route]:
    def metrics_page(req: Request) -> Response:
        return Response(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST, compress=True)

    def webhook(req: Request) -> Response:
        try:
            alerts = parse_webhook_payload(req.body, max_alerts=max_alerts)
        except PayloadError as e:
            return Response(400, reason=e.reason, message=str(e))
        return _submit(sink, metrics, alerts, req)

    return {
        **probe_routes(ready),
        METRICS_PATH: Route({"GET": metrics_page}),
        WEBHOOK_PATH: Route({"POST": webhook}, body=True),
    }


def _submit(sink: AlertSink, metrics: WebhookMetrics, alerts: list[Alert], req: Request) -> Response:
    retry = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    # A sink that acts on the request's arrival and its client's hang-up (the relay) takes the request too.
    submit_request = getattr(sink, "submit_request", None)
    try:
        if submit_request is not None:
            submit_request(alerts, req)
        else:
            sink.submit(alerts)
    except SinkFull as e:
        return Response(
            429, reason=R_QUEUE_FULL, message=f"work queue full: {e}" if str(e) else "work queue full", headers=retry
        )
    except SinkUnavailable as e:
        return Response(
            503,
            reason=R_SINK_UNAVAILABLE,
            message=f"controller unavailable: {e}" if str(e) else "controller unavailable",
            headers=retry,
        )
    except Exception as e:  # noqa: BLE001 - a bug in the engine must not look like a bad request: let Alertmanager retry
        log.error("sink failed to accept %d alert(s): %s: %s", len(alerts), type(e).__name__, e)
        return Response(500, reason=R_SINK_ERROR, message="internal error queueing the alerts")
    for a in alerts:
        metrics.alerts_received.labels(a.source, a.status).inc()
    firing = sum(a.status == FIRING for a in alerts)
    return Response(
        200, message="accepted", extra={"accepted": len(alerts), "firing": firing, "resolved": len(alerts) - firing}
    )


# --------------------------------------------------------------------------- server


class WebhookServer:
    """A running receiver.  ``shutdown()`` stops it and closes the socket."""

    def __init__(self, server: WebServer) -> None:
        self._server = server.start()

    @property
    def host(self) -> str:
        return self._server.host

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:10121``."""
        return self._server.url

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    @property
    def in_flight(self) -> int:
        """Authenticated requests being served right now (at most --web.max-concurrency)."""
        return self._server.in_flight

    @property
    def connections(self) -> int:
        """Open connections (at most --web.max-connections)."""
        return self._server.connections

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.shutdown(timeout)


def serve(
    settings: WebhookSettings,
    sink: AlertSink,
    metrics: WebhookMetrics,
    *,
    name: str = "memhp-controller",
    reuse_port: bool = False,
    max_alerts: int = MAX_ALERTS,
    timeout_status: int = 408,
    ready: Callable[[], bool] = lambda: True,
) -> WebhookServer:
    """Validate the settings, bind, and serve in a background thread.

    Raises WebhookConfigError (bad or unsafe settings, unreadable secret, web
    config or TLS files) or OSError (address in use...) before anything is served.
    """
    validate_settings(settings)
    try:
        config = web_config(settings.web_config_file)
        users = config().users
        auth = Authenticator.from_files(
            settings.bearer_token_file,
            settings.basic_auth_file,
            users=(lambda: config().users or {}) if users is not None else None,
        )
        tls = tls_contexts(config, settings.tls_cert_file, settings.tls_key_file)
        server = WebServer(
            settings.listen_address,
            _routes(sink, metrics, max_alerts, ready),
            limits=settings.limits,
            auth=auth,
            tls=tls,
            extra_headers=lambda: config().headers,
            on_reject=lambda reason: metrics.requests_rejected.labels(reason).inc(),
            error_body=_json_document,
            warn_reasons=_WORTH_A_WARNING,
            name=name,
            reuse_port=reuse_port,
            timeout_status=timeout_status,
        )
    except (SecretFileError, ListenAddressError) as e:
        raise WebhookConfigError(str(e)) from None
    for reason in _ZEROED_REASONS:
        metrics.requests_rejected.labels(reason)  # export zeros, so rate() works from the start
    handle = WebhookServer(server)
    schemes = [k for k, v in (("bearer", settings.bearer_token_file), ("basic", settings.basic_auth_file)) if v]
    if users is not None:
        schemes.append("basic_auth_users")
    log.info(
        "%s: webhook receiver listening on %s (auth: %s)",
        name,
        handle.webhook_url,
        "none (loopback only)" if settings.no_auth else "+".join(schemes),
    )
    return handle
