"""The HTTP server of both programs: one request per connection, every phase bounded.

Phases of a connection, and what bounds each:

1. **accept**: at most ``max_connections`` open connections.  At the bound, the
   oldest connection that has already been answered (and is only draining
   what the client still sends), else the oldest that has not yet sent its
   request headers, is closed to make room (counted as ``connection_limit``).
   Slow, idle or refused clients therefore cannot lock anyone out.  When no
   connection can be closed, ``health_connections`` more are taken, but only a
   request to a ``public`` route (health) is served on them: anything else is
   answered 503 ``connection_limit`` once its headers are in, so traffic that
   holds every connection cannot fail the readiness probe.  Beyond those the
   new connection is refused (plain HTTP: a 503, TLS: closed).
2. **TLS handshake, request line and headers**: within ``header_timeout``
   (and ``read_timeout``), at most ``max_header_bytes`` and ``max_headers``.
   No request slot is held yet, and nothing is known about the client: a
   trickling client (slowloris) is cut at the deadline with 408.  h11 parses
   them; memhp's own rules around it are in :func:`_for_h11` (what it takes
   that h11 would not) and :func:`_framing_problem` (what it refuses that h11
   would take).  A message whose end is unknown (a malformed or repeated
   ``Content-Length``, a transfer coding other than ``chunked``) is refused
   here, before credentials are asked (RFC 9112 6.3).
3. **routing and authentication**: health (``public`` routes) is answered
   here, without credentials and without a slot; everything else needs
   credentials (401 before any answer that depends on the path, unknown paths
   included, so paths are not revealed); a method the path does not serve gets
   405 with ``Allow``.
4. **a request slot**: at most ``max_concurrency`` authenticated requests are
   served at once; one more is answered 503 ``overloaded`` at once.  The slot
   is held from here to the end of the handler, not while the answer is sent.
5. **body**: only routes that take one; ``Content-Length`` required (no
   chunked), at most ``max_body_bytes`` (413 judged from the header, before
   reading); all of it within ``read_timeout`` of the connection.
6. **handler**: a route function turns a :class:`Request` into a
   :class:`Response`.  An exception there is a 500 and one log line, never a
   dropped connection.
7. **answer**: ``Connection: close`` (HTTP/1.0 framing), the configured extra
   headers, gzip where the route allows it and the client accepts it.  The
   request slot is released before sending: a client that does not read holds
   only its connection, until the send deadline (``read_timeout``, counted
   from the start of sending).  An unread body is drained a little (bounded)
   so that closing does not reset the connection under the answer; a draining
   connection is the first to be closed when room is needed.

Refusals are counted through ``on_reject(reason)``; those a client can trigger
at will are logged escaped and rate-limited.
"""

from __future__ import annotations

import gzip
import logging
import re
import select
import selectors
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import h11

from .address import bind_address
from .auth import AUTH_BUSY, AUTH_MISSING, Authenticator
from .logs import RateLimitedLog, escape
from .tls import TLSContexts

log = logging.getLogger(__name__)

# requests_rejected{reason} values (auth reasons are in .auth).
R_READ_TIMEOUT = "read_timeout"
R_BAD_HTTP = "bad_http"
R_TLS = "tls_handshake"
R_OVERLOADED = "overloaded"
R_CONNECTION_LIMIT = "connection_limit"
R_NOT_FOUND = "not_found"
R_METHOD = "method_not_allowed"
R_LENGTH_REQUIRED = "length_required"
R_BAD_LENGTH = "bad_content_length"
R_TOO_LARGE = "body_too_large"
R_INCOMPLETE = "incomplete_body"
R_INTERNAL = "internal_error"
R_GONE = "client_gone"  # hung up before its TLS handshake started

HEALTH_PATH = "/-/healthy"
RETRY_AFTER_OVERLOADED = 1
# Smaller bodies go out in one send with the head: two small segments would meet Nagle and delayed ACKs.
_ONE_SEND_BYTES = 64 * 1024

_RECV_BYTES = 64 * 1024
_DIGITS = re.compile(rb"[0-9]{1,18}")
_NOT_FOR_H11 = re.compile(rb"[^\x21-\x24\x26-\x7e ]")  # see _for_h11
_FOLDED = re.compile(rb"\n[ \t]")
_FRAMING_FIELDS = re.compile(rb"\n(content-length|transfer-encoding):([^\r\n]*)", re.IGNORECASE)
_END_OF_HEAD = re.compile(rb"\n\r?\n")
# Refused when repeated, not joined: which of two credentials or framings counts would be anyone's guess.
_SINGLE_HEADERS = frozenset({"authorization", "content-length", "host", "transfer-encoding"})


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 5.0  # TLS handshake + request line + headers
    read_timeout: float = 10.0  # the whole request (and, separately, sending the answer)
    max_connections: int = 64
    max_concurrency: int = 16
    max_body_bytes: int = 1 << 20
    max_header_bytes: int = 16 * 1024
    max_headers: int = 64
    # Connections beyond max_connections kept for public routes (health) when none can be closed.
    health_connections: int = 4
    # Connections the kernel completes before they are accepted (capped by net.core.somaxconn).
    listen_backlog: int = 128

    def validate(self) -> list[str]:
        problems = []
        if not self.header_timeout > 0:
            problems.append("--web.header-timeout must be positive")
        if not self.read_timeout > 0:
            problems.append("--web.read-timeout must be positive")
        if self.max_body_bytes <= 0:
            problems.append("--web.max-body-bytes must be positive")
        if self.max_concurrency < 1:
            problems.append("--web.max-concurrency must be at least 1")
        if self.max_connections < 1:
            problems.append("--web.max-connections must be at least 1")
        if not 1 <= self.listen_backlog <= 65535:
            problems.append("--web.listen-backlog must be between 1 and 65535")
        return problems


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names; values as sent, decoded Latin-1 (lossless)
    client: str
    body: bytes = b""
    arrived: float = 0.0  # time.monotonic() when its connection was accepted
    # Whether the client has hung up since sending the request (it gave up waiting for the answer).
    client_gone: Callable[[], bool] = field(default=lambda: False, repr=False)

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes | None = None  # None: the application's error document, from reason/message/extra
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None  # set for a refusal: counted with on_reject and logged
    message: str = ""
    extra: dict[str, Any] | None = None
    compress: bool = False  # gzip when the client accepts it


Handler = Callable[[Request], Response]


@dataclass(frozen=True)
class Route:
    methods: Mapping[str, Handler]  # "GET" also serves HEAD
    public: bool = False  # no credentials, no request slot: health
    body: bool = False  # the route reads a request body

    @property
    def allow(self) -> str:
        names = list(self.methods)
        if "GET" in names and "HEAD" not in names:
            names.insert(names.index("GET") + 1, "HEAD")
        return ", ".join(names)


def text_error_body(status: int, reason: str | None, message: str, extra: dict[str, Any] | None) -> tuple[str, bytes]:
    return "text/plain; charset=utf-8", (message or HTTPStatus(status).phrase).encode("utf-8", "replace") + b"\n"


class _Timeout(Exception):
    pass


class _Gone(Exception):
    """The client closed the connection (or it was closed to make room)."""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, reason: str = R_BAD_HTTP) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    client: str
    started: float
    pending: bool = True  # headers not yet received: may be closed to make room
    draining: bool = False  # answered, only draining: the first to be closed to make room
    health_only: bool = False  # taken from the health reserve: serves public routes only
    evicted: bool = False


@dataclass(eq=False)
class _Exchange:
    """One request on its way through the phases of its connection."""

    sock: socket.socket
    deadline: float  # every read shares it: a client trickling bytes (slowloris) is cut all the same
    parser: h11.Connection
    slot: bool = False  # holds a request slot: released once, when the handler is done
    unread_body: bool = False  # the client may still be sending a body: drain it a little before closing

    def recv(self) -> bytes:
        """What the client sends next (b"" at its end), within the deadline.

        Past the deadline, what the client has already sent is still taken: a server starved of CPU
        reaches its sockets late, and a request waiting whole in the socket was sent in time (a 408
        would tell the client it was slow, and Alertmanager does not retry a 408).  Only waiting for
        more is a timeout, so a client trickling bytes (slowloris) is cut all the same."""
        remaining = self.deadline - time.monotonic()
        self.sock.settimeout(max(0.0, remaining))  # 0: non-blocking, what is there already
        try:
            return self.sock.recv(_RECV_BYTES)
        except (TimeoutError, BlockingIOError, ssl.SSLWantReadError):
            raise _Timeout from None
        except (ssl.SSLError, OSError):
            raise _Gone from None


def peer_closed(sock: socket.socket) -> bool:
    """Whether the client has closed or reset its side of the connection.

    Asked after a whole request was read (a client waiting for its answer sends nothing more, so a
    hang-up means it gave up and will never read the answer), and before a TLS handshake (which
    needs the client: a hang-up there means it gave up while waiting to be accepted)."""
    try:
        fd = sock.fileno()
    except OSError:
        return True
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLRDHUP)  # POLLHUP and POLLERR are always reported
    gone = select.POLLRDHUP | select.POLLHUP | select.POLLERR | select.POLLNVAL
    return any(events & gone for _, events in poller.poll(0))


def _for_h11(line: bytes) -> bytes:
    """The request line as h11 is given it.

    memhp has always taken any byte but SP in the target (as Latin-1; logged escaped), where h11
    takes printable ASCII alone: the rest is percent-encoded for h11 (and ``%`` itself, so that
    :func:`_target` gets the bytes sent back exactly).  Every answer is HTTP/1.0 with
    ``Connection: close``, so h11 is told 1.0 for 1.1 too: it would refuse 1.1 without ``Host``."""
    method, sp, rest = line.partition(b" ")
    if rest.endswith(b" HTTP/1.1"):
        rest = rest[:-3] + b"1.0"
    return method + sp + _NOT_FOR_H11.sub(lambda m: b"%%%02X" % m[0][0], rest)


def _target(event: h11.Request) -> str:
    return unquote_to_bytes(event.target).decode("latin-1")


def _request_line(raw: bytearray) -> tuple[bytes, int] | None:
    """The request line, and where what follows it starts; None until it is complete.
    One empty line before it is tolerated (RFC 9112 2.2)."""
    start = 2 if raw.startswith(b"\r\n") else 1 if raw.startswith(b"\n") else 0
    end = raw.find(b"\n", start)
    if end < 0:
        return None
    line = bytes(raw[start:end])
    return (line[:-1] if line.endswith(b"\r") else line), end + 1


def _framing_problem(head: bytes) -> _BadRequest | None:
    """memhp's own rules where h11 is laxer: no folded lines; at most one Content-Length, of at most
    18 ASCII digits; at most one Transfer-Encoding.

    h11 unfolds continuation lines and merges equal Content-Lengths (``5, 5`` too) into one, so
    these are judged on the head as the client sent it."""
    if _FOLDED.search(head):
        return _BadRequest(400, "folded header line")
    fields = [(name.lower(), value.strip(b" \t")) for name, value in _FRAMING_FIELDS.findall(head)]
    names = [name for name, _ in fields]
    for name in (b"content-length", b"transfer-encoding"):
        if names.count(name) > 1:
            return _BadRequest(400, f"repeated {name.decode()} header")
    length = next((value for name, value in fields if name == b"content-length"), None)
    if length is not None and not _DIGITS.fullmatch(length):
        return _BadRequest(400, f"bad Content-Length {escape(length.decode('latin-1'))!r}", R_BAD_LENGTH)
    return None


def _parse_error(error: h11.RemoteProtocolError, raw: bytearray) -> _BadRequest:
    head = _END_OF_HEAD.split(bytes(raw), maxsplit=1)[0]
    problem = _framing_problem(head)
    if problem is not None:
        return problem
    if error.error_status_hint == 501:  # a transfer coding other than one "chunked": memhp takes none
        return _BadRequest(411, "only bodies with Content-Length are accepted", R_LENGTH_REQUIRED)
    # h11's message without what it quotes: that is the line as given to h11, not as sent.
    return _BadRequest(error.error_status_hint, f"malformed request: {str(error).partition(':')[0]}")


def _read_head(ex: _Exchange, limits: Limits) -> tuple[h11.Request, bytes]:
    """The request line and headers, parsed by h11, and the head as the client sent it."""
    raw = bytearray()
    started = False
    while True:
        data = ex.recv()
        if not data:
            raise _Gone
        raw += data
        if started:
            ex.parser.receive_data(data)
        elif (first := _request_line(raw)) is not None:
            ex.parser.receive_data(_for_h11(first[0]) + b"\r\n" + raw[first[1] :])
            started = True
        if started:
            try:
                event = ex.parser.next_event()
            except h11.RemoteProtocolError as e:
                raise _parse_error(e, raw) from None
            if isinstance(event, h11.Request):
                return event, bytes(raw[: len(raw) - len(ex.parser.trailing_data[0])])
        if len(raw) > limits.max_header_bytes:
            raise _BadRequest(431, f"request line and headers exceed {limits.max_header_bytes} bytes")


def _request(event: h11.Request, head: bytes, limits: Limits, client: str) -> Request:
    if len(head) > limits.max_header_bytes:
        raise _BadRequest(431, f"request line and headers exceed {limits.max_header_bytes} bytes")
    if event.http_version != b"1.0":  # 1.0 here is what the client sent as 1.0 or 1.1 (_for_h11)
        line = head.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
        raise _BadRequest(400, f"bad request line {escape(line)!r}")
    if len(event.headers) > limits.max_headers:
        raise _BadRequest(431, f"more than {limits.max_headers} header fields")
    problem = _framing_problem(head)
    if problem is not None:
        raise problem
    target = _target(event)
    try:
        split = urlsplit(target)
    except ValueError:
        raise _BadRequest(400, f"bad request target {escape(target)!r}") from None
    headers: dict[str, str] = {}
    for name, value in event.headers.raw_items():
        key, text = name.decode("ascii").lower(), value.decode("latin-1")
        if key in headers:
            if key in _SINGLE_HEADERS:
                raise _BadRequest(400, f"repeated {key} header")
            headers[key] += ", " + text
        else:
            headers[key] = text
    return Request(event.method.decode("ascii"), target, split.path or "/", split.query, headers, client)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class WebServer:
    """A listening server.  ``start()`` serves in background threads; ``shutdown()`` stops and frees the port."""

    def __init__(
        self,
        listen_address: str,
        routes: Mapping[str, Route],
        *,
        limits: Limits = Limits(),
        auth: Authenticator | None = None,
        tls: TLSContexts | None = None,
        extra_headers: Callable[[], Mapping[str, str]] = dict,
        on_reject: Callable[[str], None] = lambda reason: None,
        error_body: Callable[[int, str | None, str, dict[str, Any] | None], tuple[str, bytes]] = text_error_body,
        warn_reasons: frozenset[str] = frozenset(),
        name: str = "memhp",
        reuse_port: bool = False,
        timeout_status: int = 408,
    ) -> None:
        self.routes = dict(routes)
        # The answer when a request does not arrive in time.  408 says "you were slow", which a client
        # may take as final (Alertmanager does not retry it): a server that cannot tell whether the slow
        # one is the client or itself (the relay, under a burst) says 503 with Retry-After instead.
        self.timeout_status = timeout_status
        self.limits = limits
        self.auth = auth or Authenticator()
        self.tls = tls if tls is not None and tls.enabled else None
        self.extra_headers = extra_headers
        self.on_reject = on_reject
        self.error_body = error_body
        self.warn_reasons = warn_reasons
        self.name = name
        self._refusals = RateLimitedLog(log)
        self._slots = threading.BoundedSemaphore(limits.max_concurrency)
        self._in_flight = 0
        self._lock = threading.Lock()
        self._conns: OrderedDict[int, _Conn] = OrderedDict()
        self._stopping = threading.Event()
        family, address = bind_address(listen_address)
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                # Several processes on one host share the address; the kernel spreads
                # connections over them (memhp-relay replicas).
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._sock.bind(address)
            self._sock.listen(limits.listen_backlog)
        except OSError:
            self._sock.close()
            raise
        self._thread = threading.Thread(target=self._accept_loop, name=f"{name}-http", daemon=True)
        if limits.max_connections < limits.max_concurrency:
            log.warning(
                "--web.max-connections %d is below --web.max-concurrency %d: at most %d requests are served at once",
                limits.max_connections,
                limits.max_concurrency,
                limits.max_connections,
            )

    # -- life cycle
    def start(self) -> WebServer:
        self._thread.start()
        return self

    def shutdown(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout)
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns.values())
        for c in conns:
            self._close_now(c)

    @property
    def server_address(self) -> tuple:
        return self._sock.getsockname()

    @property
    def host(self) -> str:
        return str(self.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``https://127.0.0.1:10121``."""
        scheme = "https" if self.tls is not None else "http"
        host = self.host
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    @property
    def in_flight(self) -> int:
        """Requests holding a slot right now (at most max_concurrency)."""
        return self._in_flight

    @property
    def connections(self) -> int:
        """Open connections (at most max_connections)."""
        with self._lock:
            return len(self._conns)

    # -- accepting
    def _accept_loop(self) -> None:
        self._sock.setblocking(False)
        with selectors.DefaultSelector() as sel:
            sel.register(self._sock, selectors.EVENT_READ)
            while not self._stopping.is_set():
                if not sel.select(0.2):
                    continue
                try:
                    sock, addr = self._sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as e:  # EMFILE and friends: back off instead of spinning
                    log.error("accept failed: %s", e)
                    self._stopping.wait(0.1)
                    continue
                try:
                    self._admit(sock, str(addr[0]))
                except Exception as e:  # noqa: BLE001 - the accept loop must survive anything
                    log.error("cannot serve a connection: %s", e)
                    sock.close()

    def _admit(self, sock: socket.socket, client: str) -> None:
        sock.setblocking(True)
        conn = _Conn(sock, client, time.monotonic())
        with self._lock:
            victim, full = self._make_room(conn)
        if victim is not None:
            self._refuse_log(
                R_CONNECTION_LIMIT,
                "closed a connection from %s %s: %d open",
                escape(victim.client),
                "already answered" if victim.draining else "still sending its request",
                self.limits.max_connections,
            )
            self._close_now(victim)
        if full:
            self._refuse_log(
                R_CONNECTION_LIMIT,
                "refused a connection from %s: %d open, all busy",
                escape(client),
                self.limits.max_connections,
            )
            if self.tls is None:
                ctype, body = self.error_body(503, R_OVERLOADED, "too many connections", None)
                try:
                    sock.settimeout(0.2)
                    sock.sendall(self._head(503, ctype, len(body), {"Retry-After": "1"}) + body)
                except OSError:
                    pass
            sock.close()
            return
        threading.Thread(target=self._serve, args=(conn,), name=f"{self.name}-conn", daemon=True).start()

    def _make_room(self, conn: _Conn) -> tuple[_Conn | None, bool]:
        """Under the lock: register ``conn`` unless the server is full; (connection to close, full)."""
        limits = self.limits
        victim = None
        if len(self._conns) >= limits.max_connections:
            conns = self._conns.values()
            victim = next((c for c in conns if c.draining), None) or next((c for c in conns if c.pending), None)
            if victim is not None:
                victim.evicted = True
                del self._conns[id(victim)]
        open_now = len(self._conns)
        if open_now >= limits.max_connections + limits.health_connections:
            return victim, True
        conn.health_only = open_now >= limits.max_connections
        self._conns[id(conn)] = conn
        return victim, False

    @staticmethod
    def _close_now(conn: _Conn) -> None:
        try:  # the base class's shutdown: wakes a thread blocked in recv, TLS or not
            socket.socket.shutdown(conn.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def _refuse_log(self, reason: str, msg: str, *args: object) -> None:
        self.on_reject(reason)
        level = logging.WARNING if reason in self.warn_reasons or reason == R_CONNECTION_LIMIT else logging.DEBUG
        self._refusals.log(level, reason, msg, *args)

    # -- one connection
    def _serve(self, conn: _Conn) -> None:
        header_deadline = conn.started + min(self.limits.header_timeout, self.limits.read_timeout)
        ex = _Exchange(conn.sock, header_deadline, self._parser())
        try:
            if self.tls is not None:
                if peer_closed(conn.sock):
                    # Given up while it waited to be accepted (a burst): a handshake would be work for no one.
                    # (Plain HTTP is not judged so: a client may send its request and shut down its side.)
                    self.on_reject(R_GONE)
                    return
                tls_sock = self._handshake(conn, header_deadline)
                if tls_sock is None:
                    return
                ex.sock = tls_sock
            req = self._receive_head(conn, ex)
            if req is None:
                return
            with self._lock:
                conn.pending = False
            req.arrived = conn.started
            req.client_gone = lambda: peer_closed(ex.sock)
            ex.deadline = conn.started + self.limits.read_timeout
            resp = self._dispatch(req, ex, conn.health_only)
            if resp is not None:
                data = self._encode(req, resp)
                self._release(ex)  # the handler is done: a client slow to read holds no slot
                self._send(ex.sock, req, data)
            self._release(ex)
            if ex.unread_body:
                self._drain(conn, ex.sock, header_deadline)
        except Exception as e:  # noqa: BLE001 - a connection's thread must never die with a traceback
            log.error("error serving %s: %s", escape(conn.client), escape(f"{type(e).__name__}: {e}"))
        finally:
            self._release(ex)
            with self._lock:
                self._conns.pop(id(conn), None)
            for s in {id(ex.sock): ex.sock, id(conn.sock): conn.sock}.values():
                try:
                    s.close()
                except OSError:
                    pass

    def _parser(self) -> h11.Connection:
        # memhp bounds the head itself (as sent, which _for_h11 may lengthen); h11's bound only backs it up.
        return h11.Connection(h11.SERVER, max_incomplete_event_size=4 * self.limits.max_header_bytes + _RECV_BYTES)

    def _receive_head(self, conn: _Conn, ex: _Exchange) -> Request | None:
        """The request, or None when the client got its refusal (or went away) already."""
        try:
            event, head = _read_head(ex, self.limits)
            return _request(event, head, self.limits, conn.client)
        except _Timeout:
            if not conn.evicted:
                self._answer(ex.sock, None, self._timed_out("request not received in time"))
        except _Gone:
            pass
        except _BadRequest as e:
            self._answer(ex.sock, None, Response(e.status, reason=e.reason, message=str(e)))
            self._drain(conn, ex.sock, ex.deadline)  # the rest of what it sent, so the answer is not reset
        return None

    def _timed_out(self, message: str) -> Response:
        headers = {"Retry-After": str(RETRY_AFTER_OVERLOADED)} if self.timeout_status == 503 else {}
        return Response(self.timeout_status, reason=R_READ_TIMEOUT, message=message, headers=headers)

    def _release(self, ex: _Exchange) -> None:
        if ex.slot:
            ex.slot = False
            with self._lock:
                self._in_flight -= 1
            self._slots.release()

    def _handshake(self, conn: _Conn, deadline: float) -> ssl.SSLSocket | None:
        assert self.tls is not None
        ctx = self.tls.get()
        assert ctx is not None
        try:
            conn.sock.settimeout(max(0.001, deadline - time.monotonic()))
            tls_sock = ctx.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
            conn.sock = tls_sock
            tls_sock.do_handshake()
            return tls_sock
        except (OSError, ssl.SSLError, ValueError) as e:
            if not conn.evicted:
                self.on_reject(R_TLS)
                log.debug("TLS handshake with %s failed: %s", escape(conn.client), escape(e))
            return None

    def _dispatch(self, req: Request, ex: _Exchange, health_only: bool = False) -> Response | None:
        route = self.routes.get(req.path)
        method = "GET" if req.method == "HEAD" else req.method
        has_body = "content-length" in req.headers or "transfer-encoding" in req.headers
        if route is not None and route.public:
            if method not in route.methods:
                ex.unread_body = has_body
                return Response(405, reason=R_METHOD, message=f"use {route.allow}", headers={"Allow": route.allow})
            return self._call(route.methods[method], req)
        ex.unread_body = has_body  # until a route reads it
        if health_only:
            return Response(
                503,
                reason=R_CONNECTION_LIMIT,
                message="too many connections",
                headers={"Retry-After": str(RETRY_AFTER_OVERLOADED)},
            )
        refusal = self._authenticate(req)
        if refusal is not None:
            return refusal
        if route is None:
            return Response(404, reason=R_NOT_FOUND, message=f"no such path {escape(req.path)!r}")
        if method not in route.methods:
            return Response(405, reason=R_METHOD, message=f"use {route.allow}", headers={"Allow": route.allow})
        if not self._slots.acquire(blocking=False):
            return Response(
                503,
                reason=R_OVERLOADED,
                message="too many requests at once",
                headers={"Retry-After": str(RETRY_AFTER_OVERLOADED)},
            )
        ex.slot = True
        with self._lock:
            self._in_flight += 1
        if route.body:
            ex.unread_body = True
            body_or_refusal = self._read_body(req, ex)
            if isinstance(body_or_refusal, Response):
                ex.unread_body = body_or_refusal.reason not in (R_INCOMPLETE, R_READ_TIMEOUT)
                return body_or_refusal
            ex.unread_body = False
            if body_or_refusal is None:
                return None
            req.body = body_or_refusal
        return self._call(route.methods[method], req)

    def _authenticate(self, req: Request) -> Response | None:
        reason = self.auth.check(req.header("Authorization"))
        if reason is None:
            return None
        if reason == AUTH_BUSY:  # not judged: say so, and when to come back, instead of "wrong credentials"
            return Response(
                503,
                reason=reason,
                message="too many password checks at once",
                headers={"Retry-After": str(RETRY_AFTER_OVERLOADED)},
            )
        return Response(
            401,
            reason=reason,
            message="authentication required" if reason == AUTH_MISSING else "wrong credentials",
            headers={"WWW-Authenticate": self.auth.challenge},
        )

    def _read_body(self, req: Request, ex: _Exchange) -> bytes | Response | None:
        limit = self.limits.max_body_bytes
        if req.header("Transfer-Encoding"):
            return Response(
                411, reason=R_LENGTH_REQUIRED, message="chunked bodies are not accepted; send Content-Length"
            )
        raw_length = req.header("Content-Length")
        if raw_length is None:
            return Response(411, reason=R_LENGTH_REQUIRED, message="Content-Length required")
        length = int(raw_length)  # ASCII digits, at most 18 of them: _framing_problem
        if length > limit:
            return Response(
                413,
                reason=R_TOO_LARGE,
                message=f"body of {length} bytes exceeds the limit of {limit}",
                extra={"limit": limit},
            )
        return self._receive_body(ex, length)

    def _receive_body(self, ex: _Exchange, length: int) -> bytes | Response | None:
        """The body h11 frames by its Content-Length, within the request's deadline."""
        body = bytearray()
        while (event := ex.parser.next_event()) is h11.NEED_DATA or isinstance(event, h11.Data):
            if isinstance(event, h11.Data):
                body += event.data
                continue
            try:
                data = ex.recv()
            except _Timeout:
                return self._timed_out("request body not received in time")
            except _Gone:
                self.on_reject(R_INCOMPLETE)
                return None
            if not data:
                return Response(400, reason=R_INCOMPLETE, message=f"body ended after {len(body)} of {length} bytes")
            ex.parser.receive_data(data)
        return bytes(body)

    def _call(self, handler: Handler, req: Request) -> Response:
        try:
            return handler(req)
        except Exception as e:  # noqa: BLE001 - a bug in a route: one line, a 500, and the server goes on
            tb = e.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f" at {tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else ""
            log.error(
                "internal error serving %s %s: %s%s",
                req.method,
                escape(req.path),
                escape(f"{type(e).__name__}: {e}"),
                where,
            )
            return Response(500, reason=R_INTERNAL, message="internal error")

    # -- answering
    def _head(self, status: int, content_type: str, length: int, headers: Mapping[str, str]) -> bytes:
        lines = [
            f"HTTP/1.0 {status} {_phrase(status)}",
            f"Server: {self.name}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}",
            "Connection: close",
        ]
        extra = dict(self.extra_headers())
        extra.update(headers)
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")

    def _answer(self, sock: socket.socket, req: Request | None, resp: Response) -> None:
        self._send(sock, req, self._encode(req, resp))

    def _encode(self, req: Request | None, resp: Response) -> tuple[bytes, bytes]:
        """The answer's head and body (none for HEAD); counts and logs a refusal."""
        if resp.reason is not None:
            self._refuse_log(
                resp.reason,
                "refused %s %s from %s with %d (%s): %s",
                escape(req.method if req else "-"),
                escape(req.path if req else "-"),
                escape(req.client if req else "-"),
                resp.status,
                resp.reason,
                escape(resp.message),
            )
        body, ctype, headers = resp.body, resp.content_type, dict(resp.headers)
        if body is None:
            ctype, body = self.error_body(resp.status, resp.reason, resp.message, resp.extra)
        if resp.compress and req is not None and gzip_accepted(req.header("Accept-Encoding") or ""):
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        head = self._head(resp.status, ctype, len(body), headers)
        if req is not None:
            log.debug(
                "%s %s %s -> %d %d bytes",
                escape(req.client),
                escape(req.method),
                escape(req.target),
                resp.status,
                len(body),
            )
        if req is not None and req.method == "HEAD":
            return head, b""
        if len(body) <= _ONE_SEND_BYTES:
            return head + body, b""
        return head, body

    def _send(self, sock: socket.socket, req: Request | None, data: tuple[bytes, bytes]) -> None:
        """Send within the send deadline (``read_timeout`` from now): bounds a client that will not read."""
        deadline = time.monotonic() + self.limits.read_timeout
        try:
            for part in data:
                if part:
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    sock.sendall(part)
        except OSError as e:
            log.debug("could not answer %s: %s", escape(req.client if req else "-"), escape(e))

    def _drain(
        self, conn: _Conn, sock: socket.socket, deadline: float, cap: int = 64 * 1024, wait: float = 1.0
    ) -> None:
        """Lingering close: read (and drop) a little of an unread body so that
        closing does not reset the connection before the client has read our answer.
        The connection may be closed meanwhile to make room: a client that sends
        no body must not hold a connection for the whole wait."""
        with self._lock:
            conn.draining = True
            if conn.evicted:
                return
        until = min(time.monotonic() + wait, max(deadline, time.monotonic()) + wait)
        got = 0
        try:
            if not isinstance(sock, ssl.SSLSocket):
                sock.shutdown(socket.SHUT_WR)
            while got < cap:
                remaining = until - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                chunk = sock.recv(min(16384, cap - got))
                if not chunk:
                    break
                got += len(chunk)
        except OSError:
            pass


def gzip_accepted(accept_encoding: str) -> bool:
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False
