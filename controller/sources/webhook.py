"""Alertmanager webhook receiver (payload version 4), plus /metrics and /-/healthy.

One HTTP server (stdlib ``http.server``) with:

* authentication required by default: bearer token and/or basic auth from
  files, compared in constant time; ``--web.no-auth`` only on loopback;
* optional TLS (cert + key files), the handshake done in the worker thread
  under the request deadline, never in the accept loop;
* a total deadline per request for handshake, headers and body (slow clients
  cannot hold a worker by trickling bytes), a body size limit checked against
  ``Content-Length`` before reading, bounded concurrency (a semaphore on the
  worker threads; over the bound a connection is refused at once with 503 and
  Alertmanager retries);
* one request per connection (HTTP/1.0 semantics, ``Connection: close``), so
  idle keep-alive connections never hold a worker.

Status codes (see docs/controller.md): 200 accepted by the sink; 400 invalid
payload; 401 credentials; 404/405 path or method; 408 too slow; 411/413 length;
429 sink full; 503 sink unavailable or overloaded.  Alertmanager's webhook
notifier retries 5xx within a flush and, since its notification log is only
updated on success, sends a refused group again at its next ``group_interval``.
"""

from __future__ import annotations

import argparse
import io
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memhp.controller.alert import FIRING, RESOLVED, Alert, AlertSink, SinkFull, SinkUnavailable
from memhp.controller.metrics import ControllerMetrics
from memhp.units import parse_duration

from .auth import Authenticator, SecretFileError
from .common import TimestampError, canonical_end_time, canonical_time, labels_fingerprint, string_map

log = logging.getLogger(__name__)

DEFAULT_PORT = 10302  # next to the exporter's 10301; outside 9100-9999, which Prometheus' port list has filled
DEFAULT_LISTEN_ADDRESS = f"127.0.0.1:{DEFAULT_PORT}"
WEBHOOK_PATH = "/webhook/alertmanager"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/-/healthy"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENCY = 16
SUPPORTED_VERSION = "4"
RETRY_AFTER_SECONDS = 5

# requests_rejected{reason} values (auth reasons live in .auth).
R_BAD_JSON = "bad_json"
R_BAD_VERSION = "bad_version"
R_INVALID = "invalid_payload"
R_TOO_LARGE = "body_too_large"
R_LENGTH_REQUIRED = "length_required"
R_BAD_LENGTH = "bad_content_length"
R_INCOMPLETE = "incomplete_body"
R_READ_TIMEOUT = "read_timeout"
R_NOT_FOUND = "not_found"
R_METHOD = "method_not_allowed"
R_BAD_HTTP = "bad_http"
R_TLS = "tls_handshake"
R_OVERLOADED = "overloaded"
R_QUEUE_FULL = "queue_full"
R_SINK_UNAVAILABLE = "sink_unavailable"
R_SINK_ERROR = "sink_error"


# Refusals an operator must hear about (a misconfigured or incompatible sender); the
# others (probes, slow or overloaded clients) are counted and logged at debug level.
_WORTH_A_WARNING = frozenset(
    {R_BAD_JSON, R_BAD_VERSION, R_INVALID, R_TOO_LARGE, "auth_missing", "auth_failed", R_SINK_ERROR}
)


class WebhookConfigError(ValueError):
    """The settings cannot be served safely; the message says why."""


class PayloadError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- payload


def _require_str(obj: dict, key: str, where: str, *, required: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise PayloadError(R_INVALID, f"{where}: missing {key!r}")
        return None
    value = obj[key]
    if not isinstance(value, str):
        raise PayloadError(R_INVALID, f"{where}.{key} must be a string, got {type(value).__name__}")
    return value


def _string_map(obj: dict, key: str, where: str, *, required: bool) -> dict[str, str]:
    if key not in obj:
        if required:
            raise PayloadError(R_INVALID, f"{where}: missing {key!r}")
        return {}
    try:
        return string_map(obj[key], f"{where}.{key}")
    except TypeError as e:
        raise PayloadError(R_INVALID, str(e)) from None


def _status(obj: dict, where: str) -> str:
    value = _require_str(obj, "status", where)
    if value not in (FIRING, RESOLVED):
        raise PayloadError(R_INVALID, f"{where}.status must be 'firing' or 'resolved', got {value!r}")
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_webhook_payload(body: bytes, *, source: str = "webhook") -> list[Alert]:
    """Validate one Alertmanager webhook body (version 4) and return its alerts.

    All or nothing: any invalid alert rejects the whole payload (Alertmanager
    does not resend on 4xx, and acting on part of a group we misread is worse).
    Each alert keeps its own status; the group's ``status`` is only checked.
    """
    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise PayloadError(R_BAD_JSON, f"body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise PayloadError(R_INVALID, f"payload must be a JSON object, got {type(payload).__name__}")
    version = payload.get("version")
    if version != SUPPORTED_VERSION:
        raise PayloadError(R_BAD_VERSION, f'unsupported payload version {version!r}; only "4" is understood')
    _status(payload, "payload")
    for key in ("receiver", "groupKey", "externalURL"):
        _require_str(payload, key, "payload", required=False)
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        _string_map(payload, key, "payload", required=False)
    truncated = payload.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or truncated < 0:
        raise PayloadError(R_INVALID, "payload.truncatedAlerts must be a non-negative integer")
    raw_alerts = payload.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError(R_INVALID, "payload.alerts must be a list")
    if not raw_alerts:
        raise PayloadError(R_INVALID, "payload.alerts is empty")
    if truncated:
        log.warning(
            "Alertmanager truncated %d alert(s) from group %r (max_alerts); set max_alerts: 0 on the memhp receiver",
            truncated,
            payload.get("groupKey"),
        )
    return [_parse_alert(raw, f"alerts[{i}]", source) for i, raw in enumerate(raw_alerts)]


def _parse_alert(raw: Any, where: str, source: str) -> Alert:
    if not isinstance(raw, dict):
        raise PayloadError(R_INVALID, f"{where} must be an object, got {type(raw).__name__}")
    status = _status(raw, where)
    labels = _string_map(raw, "labels", where, required=True)
    name = labels.get("alertname", "")
    if not name:
        raise PayloadError(R_INVALID, f"{where}.labels has no alertname")
    annotations = _string_map(raw, "annotations", where, required=False)
    starts_at = _require_str(raw, "startsAt", where)
    ends_at = _require_str(raw, "endsAt", where, required=False)
    _require_str(raw, "generatorURL", where, required=False)
    fingerprint = _require_str(raw, "fingerprint", where, required=False) or labels_fingerprint(labels)
    try:
        starts = canonical_time(starts_at or "")
        ends = canonical_end_time(ends_at)
    except TimestampError as e:
        raise PayloadError(R_INVALID, f"{where}: {e}") from None
    return Alert(
        name=name,
        status=status,
        labels=labels,
        annotations=annotations,
        starts_at=starts,
        ends_at=ends,
        fingerprint=fingerprint,
        source=source,
    )


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class WebhookSettings:
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    bearer_token_file: str | None = None
    basic_auth_file: str | None = None
    no_auth: bool = False
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    read_timeout: float = DEFAULT_READ_TIMEOUT
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file)


def split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; an empty host means every interface."""
    if address.startswith("["):
        host, sep, port = address[1:].partition("]:")
    else:
        host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise WebhookConfigError(f"--web.listen-address must be host:port, got {address!r}")
    return host, int(port)


def _resolve(host: str, port: int) -> list[tuple[int, tuple]]:
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise WebhookConfigError(f"cannot resolve listen host {host!r}: {e}") from None
    return [(family, sockaddr) for family, _, _, _, sockaddr in infos]


def is_loopback_host(host: str) -> bool:
    """True only when every address the host resolves to is a loopback address."""
    if not host:
        return False  # all interfaces
    addrs = _resolve(host, 0)
    return bool(addrs) and all(ipaddress.ip_address(sa[0].split("%")[0]).is_loopback for _, sa in addrs)


def validate_settings(settings: WebhookSettings) -> None:
    """Raise WebhookConfigError for any setting that would be unsafe or unusable."""
    host, _ = split_host_port(settings.listen_address)
    has_auth = bool(settings.bearer_token_file or settings.basic_auth_file)
    if settings.no_auth and has_auth:
        raise WebhookConfigError("--web.no-auth contradicts the auth file(s) given")
    if not has_auth and not settings.no_auth:
        raise WebhookConfigError(
            "authentication is required: give --web.auth.bearer-token-file or --web.auth.basic-auth-file "
            "(or --web.no-auth, on a loopback address only)"
        )
    if settings.no_auth and not is_loopback_host(host):
        raise WebhookConfigError(
            f"refusing to listen on non-loopback address {settings.listen_address!r} without authentication"
        )
    if bool(settings.tls_cert_file) != bool(settings.tls_key_file):
        raise WebhookConfigError("TLS needs both --web.tls.cert-file and --web.tls.key-file")
    if settings.max_body_bytes <= 0:
        raise WebhookConfigError("--web.max-body-bytes must be positive")
    if settings.read_timeout <= 0:
        raise WebhookConfigError("--web.read-timeout must be positive")
    if settings.max_concurrency < 1:
        raise WebhookConfigError("--web.max-concurrency must be at least 1")


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
        "--web.tls.cert-file", dest="web_tls_cert_file", metavar="FILE", help="PEM certificate (chain) to serve HTTPS"
    )
    g.add_argument("--web.tls.key-file", dest="web_tls_key_file", metavar="FILE", help="PEM private key")
    g.add_argument(
        "--web.max-body-bytes",
        dest="web_max_body_bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"largest request body accepted (default {DEFAULT_MAX_BODY_BYTES}); 413 above",
    )
    g.add_argument(
        "--web.read-timeout",
        dest="web_read_timeout",
        type=parse_duration,
        default=DEFAULT_READ_TIMEOUT,
        metavar="DURATION",
        help=f"total time to receive one request, TLS handshake included (default {DEFAULT_READ_TIMEOUT:g}s)",
    )
    g.add_argument(
        "--web.max-concurrency",
        dest="web_max_concurrency",
        type=int,
        default=DEFAULT_MAX_CONCURRENCY,
        metavar="N",
        help=f"requests served at once (default {DEFAULT_MAX_CONCURRENCY}); 503 above",
    )


def settings_from_args(args: argparse.Namespace) -> WebhookSettings:
    settings = WebhookSettings(
        listen_address=args.web_listen_address,
        bearer_token_file=args.web_auth_bearer_token_file,
        basic_auth_file=args.web_auth_basic_auth_file,
        no_auth=args.web_no_auth,
        tls_cert_file=args.web_tls_cert_file,
        tls_key_file=args.web_tls_key_file,
        max_body_bytes=args.web_max_body_bytes,
        read_timeout=args.web_read_timeout,
        max_concurrency=args.web_max_concurrency,
    )
    validate_settings(settings)
    return settings


# --------------------------------------------------------------------------- server


class _DeadlineReader(io.RawIOBase):
    """Socket reads that all share one absolute deadline (defeats slowloris)."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self.deadline = deadline
        self.timed_out = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            self.timed_out = True
            raise TimeoutError("request read deadline exceeded")
        self._sock.settimeout(remaining)
        try:
            return self._sock.recv_into(buffer)
        except TimeoutError:
            self.timed_out = True
            raise


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "memhp-controller"

    def version_string(self) -> str:
        return self.server_version

    # -- connection set-up: TLS handshake and reads under the deadline
    def setup(self) -> None:
        srv = self.server
        self.connection = self.request
        self._responded = False
        self._dead = False
        self._unread_body = False
        self.command = None  # type: ignore[assignment]
        self.path = ""
        self.request_version = "HTTP/1.0"
        self.requestline = ""
        deadline = time.monotonic() + srv.settings.read_timeout
        self.connection.settimeout(srv.settings.read_timeout)
        if srv.ssl_context is not None:
            try:
                self.connection = srv.ssl_context.wrap_socket(
                    self.request, server_side=True, do_handshake_on_connect=False
                )
                self.connection.settimeout(max(0.001, deadline - time.monotonic()))
                self.connection.do_handshake()
            except (OSError, ssl.SSLError) as e:
                log.debug("TLS handshake with %s failed: %s", self.client_address, e)
                srv.reject(R_TLS)
                self._dead = True
        self._reader = _DeadlineReader(self.connection, deadline)
        self.rfile = io.BufferedReader(self._reader, 8192)
        self.wfile = _SocketWriter(self.connection)
        self._deadline = deadline

    def handle(self) -> None:
        if self._dead:
            return
        super().handle()  # one request: protocol_version HTTP/1.0 closes after it
        if self._reader.timed_out and not self._responded:
            # The deadline passed while the request line or headers were still arriving.
            self._reply(408, R_READ_TIMEOUT, "request not received in time")

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        if self._unread_body and not self._dead:
            self._drain()
        if self.connection is not self.request:  # the TLS socket took over the file descriptor
            try:
                self.connection.close()
            except OSError:
                pass

    def _drain(self, cap: int = 64 * 1024, wait: float = 1.0) -> None:
        """Lingering close: read (and drop) a little of an unread body so that
        closing does not reset the connection before the client has read our
        answer.  Bounded by bytes, by time and by the request deadline."""
        until = min(time.monotonic() + wait, self._deadline + wait)
        got = 0
        try:
            if self.connection is self.request:
                self.connection.shutdown(socket.SHUT_WR)
            while got < cap:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                self.connection.settimeout(remaining)
                chunk = self.connection.recv(min(16384, cap - got))
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by the stdlib for malformed request lines and headers, unknown methods.
        reason = R_METHOD if code == 501 else R_BAD_HTTP
        self._reply(code, reason, message or "bad request")

    # -- responses
    def _reply(
        self,
        code: int,
        reason: str | None,
        message: str,
        *,
        extra: dict | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        if reason is not None:
            self.server.reject(reason)
            if reason in _WORTH_A_WARNING:
                log.warning(
                    "refused %s %s from %s with %d (%s): %s",
                    self.command,
                    self.path,
                    self.client_address[0],
                    code,
                    reason,
                    message,
                )
            else:
                log.debug(
                    "refused %s %s from %s with %d (%s): %s",
                    self.command,
                    self.path,
                    self.client_address[0],
                    code,
                    reason,
                    message,
                )
        if body is None:
            doc: dict[str, Any] = {"status": "error" if code >= 400 else "success", "message": message}
            if reason is not None:
                doc["reason"] = reason
            if extra:
                doc.update(extra)
            body = (json.dumps(doc) + "\n").encode()
        self._responded = True
        self.close_connection = True
        try:
            self.connection.settimeout(self.server.settings.read_timeout)  # bounds a client that will not read
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError as e:
            log.debug("could not answer %s: %s", self.client_address, e)

    def _authenticated(self) -> bool:
        reason = self.server.auth.check(self.headers.get("Authorization"))
        if reason is None:
            return True
        self._unread_body = self.command == "POST"
        self._reply(
            401,
            reason,
            "authentication required" if reason == "auth_missing" else "wrong credentials",
            headers={"WWW-Authenticate": self.server.auth.challenge},
        )
        return False

    def _path(self) -> str:
        return urlsplit(self.path).path

    # -- methods
    def do_GET(self) -> None:
        path = self._path()
        if path == HEALTH_PATH:
            return self._reply(200, None, "", body=b"OK\n", content_type="text/plain; charset=utf-8")
        if not self._authenticated():
            return
        if path == METRICS_PATH:
            return self._reply(
                200, None, "", body=generate_latest(self.server.metrics.registry), content_type=CONTENT_TYPE_LATEST
            )
        if path == WEBHOOK_PATH:
            return self._reply(405, R_METHOD, "use POST", headers={"Allow": "POST"})
        return self._reply(404, R_NOT_FOUND, f"no such path {path!r}")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        path = self._path()
        if path == HEALTH_PATH:
            return self._reply(405, R_METHOD, "use GET", headers={"Allow": "GET, HEAD"})
        if not self._authenticated():
            return
        if path != WEBHOOK_PATH:
            if path == METRICS_PATH:
                return self._reply(405, R_METHOD, "use GET", headers={"Allow": "GET, HEAD"})
            self._unread_body = True
            return self._reply(404, R_NOT_FOUND, f"no such path {path!r}")
        body = self._read_body()
        if body is None:
            return
        try:
            alerts = parse_webhook_payload(body)
        except PayloadError as e:
            return self._reply(400, e.reason, str(e))
        self._submit(alerts)

    def _read_body(self) -> bytes | None:
        limit = self.server.settings.max_body_bytes
        self._unread_body = True  # until read in full
        if self.headers.get("Transfer-Encoding"):
            self._reply(411, R_LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length")
            return None
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self._reply(411, R_LENGTH_REQUIRED, "Content-Length required")
            return None
        if not raw_length.strip().isdigit():
            self._reply(400, R_BAD_LENGTH, f"bad Content-Length {raw_length!r}")
            return None
        length = int(raw_length)
        if length > limit:
            self._reply(
                413, R_TOO_LARGE, f"body of {length} bytes exceeds the limit of {limit}", extra={"limit": limit}
            )
            return None
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self._reply(408, R_READ_TIMEOUT, "request body not received in time")
            return None
        except OSError as e:
            log.debug("reading body from %s failed: %s", self.client_address, e)
            self.server.reject(R_INCOMPLETE)
            self._responded = True
            return None
        if len(body) != length:
            self._unread_body = False
            self._reply(400, R_INCOMPLETE, f"body ended after {len(body)} of {length} bytes")
            return None
        self._unread_body = False
        return body

    def _submit(self, alerts: list[Alert]) -> None:
        srv = self.server
        try:
            srv.sink.submit(alerts)
        except SinkFull as e:
            return self._reply(
                429,
                R_QUEUE_FULL,
                f"work queue full: {e}" if str(e) else "work queue full",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except SinkUnavailable as e:
            return self._reply(
                503,
                R_SINK_UNAVAILABLE,
                f"controller unavailable: {e}" if str(e) else "controller unavailable",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        except Exception:  # a bug in the engine must not look like a bad request: let Alertmanager retry
            log.exception("sink failed to accept %d alert(s)", len(alerts))
            return self._reply(500, R_SINK_ERROR, "internal error queueing the alerts")
        for a in alerts:
            srv.metrics.alerts_received.labels(a.source, a.status).inc()
        firing = sum(a.status == FIRING for a in alerts)
        self._reply(
            200, None, "accepted", extra={"accepted": len(alerts), "firing": firing, "resolved": len(alerts) - firing}
        )


_BUSY_BODY = b'{"status": "error", "reason": "overloaded", "message": "too many requests at once"}\n'
_BUSY_RESPONSE = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
    b"Retry-After: 1\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY
)


class _SocketWriter(io.BufferedIOBase):
    """Unbuffered writes with sendall (the stdlib's own writer is private)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._sock.sendall(b)
        with memoryview(b) as view:
            return view.nbytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        address: tuple,
        family: int,
        settings: WebhookSettings,
        sink: AlertSink,
        metrics: ControllerMetrics,
        auth: Authenticator,
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        self.address_family = family
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self.auth = auth
        self.ssl_context = ssl_context
        self.slots = threading.BoundedSemaphore(settings.max_concurrency)
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        super().__init__(address, _Handler)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _count(self, delta: int) -> None:
        with self._in_flight_lock:
            self._in_flight += delta

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()

    def reject(self, reason: str) -> None:
        self.metrics.requests_rejected.labels(reason).inc()

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            log.warning("%d requests in flight already; refusing %s", self.settings.max_concurrency, client_address)
            self.reject(R_OVERLOADED)
            if self.ssl_context is None:
                try:
                    request.settimeout(1.0)
                    request.sendall(_BUSY_RESPONSE)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        self._count(+1)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._count(-1)
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        # ThreadingMixIn's version, with the slot freed *before* the socket is
        # closed: a client that has seen its connection end must find the slot
        # free (otherwise, with max_concurrency=1, its next request can be
        # refused as overloaded).
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - socketserver's contract: report and keep serving
            self.handle_error(request, client_address)
        finally:
            self._count(-1)
            self.slots.release()
            self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        log.exception("error serving %s", client_address)


class WebhookServer:
    """A running receiver.  ``shutdown()`` stops it and closes the socket."""

    def __init__(self, server: _Server) -> None:
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="memhp-webhook", daemon=True
        )
        self._thread.start()

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:10121``."""
        scheme = "https" if self._server.ssl_context is not None else "http"
        host = self.host
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    @property
    def webhook_url(self) -> str:
        return self.url + WEBHOOK_PATH

    @property
    def in_flight(self) -> int:
        """Connections being served right now (at most --web.max-concurrency)."""
        return self._server.in_flight

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def _ssl_context(settings: WebhookSettings) -> ssl.SSLContext | None:
    if not settings.tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert settings.tls_cert_file is not None
    try:
        ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as e:
        raise WebhookConfigError(f"cannot load TLS certificate/key: {e}") from None
    return ctx


def serve(settings: WebhookSettings, sink: AlertSink, metrics: ControllerMetrics) -> WebhookServer:
    """Validate the settings, bind, and serve in a background thread.

    Raises WebhookConfigError (bad or unsafe settings, unreadable secret or
    TLS files) or OSError (address in use...) before anything is served.
    """
    validate_settings(settings)
    try:
        auth = Authenticator.from_files(settings.bearer_token_file, settings.basic_auth_file)
    except SecretFileError as e:
        raise WebhookConfigError(str(e)) from None
    ctx = _ssl_context(settings)
    host, port = split_host_port(settings.listen_address)
    if host:
        family, sockaddr = _resolve(host, port)[0]
        address: tuple = sockaddr[:2]
    else:
        family, address = socket.AF_INET, ("", port)  # every IPv4 interface
    server = _Server(address, family, settings, sink, metrics, auth, ctx)
    for reason in (
        R_BAD_JSON,
        R_BAD_VERSION,
        R_INVALID,
        R_TOO_LARGE,
        "auth_missing",
        "auth_failed",
        R_READ_TIMEOUT,
        R_QUEUE_FULL,
        R_SINK_UNAVAILABLE,
        R_OVERLOADED,
    ):
        metrics.requests_rejected.labels(reason)  # export zeros, so rate() works from the start
    handle = WebhookServer(server)
    log.info(
        "webhook receiver listening on %s (auth: %s)",
        handle.webhook_url,
        "none (loopback only)"
        if settings.no_auth
        else "+".join(k for k, v in (("bearer", settings.bearer_token_file), ("basic", settings.basic_auth_file)) if v),
    )
    return handle
