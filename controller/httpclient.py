"""One HTTP request under a total deadline and a response-size cap.

``urllib``'s and ``http.client``'s ``timeout`` bounds each socket read, not
the request: a server that drips one byte a second holds a request for as
long as it likes.  Here a timer shuts the socket down when the total deadline
passes (connect, TLS handshake, headers and body alike), and the body is
read one socket read at a time, so it never grows past ``max_bytes`` (plus
one read) before the request is abandoned.  Used by pull mode (polls of
Alertmanager) and by the relay (deliveries to controllers).

The host name is resolved inside the deadline too: ``getaddrinfo`` cannot be
interrupted, so it runs in a worker thread that the request waits for only
until the deadline, then abandons (the lookup ends on the resolver's own
timeout; at most ``MAX_PENDING_LOOKUPS`` may be pending at once, past that a
request fails at once).  The connection then goes to the addresses found,
while TLS still checks the certificate against the URL's host name
(``server_hostname``), as it would without the split.
"""

from __future__ import annotations

import heapq
import http.client
import ipaddress
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlsplit

_READ_CHUNK = 64 * 1024
MAX_PENDING_LOOKUPS = 256

AddrInfo = tuple[Any, ...]  # one getaddrinfo entry: (family, type, proto, canonname, sockaddr)
Resolver = Callable[[str, int], Sequence[AddrInfo]]

_pending_lookups = threading.BoundedSemaphore(MAX_PENDING_LOOKUPS)


class DeadlineExceeded(TimeoutError):
    """No complete answer within the total deadline."""


class ResponseTooLarge(ValueError):
    """The answer is larger than the cap; it was not read in full."""


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: Message
    body: bytes

    def retry_after(self, cap: float) -> float | None:
        """``Retry-After`` in seconds (delta form only), at most ``cap``; None if absent or not a number."""
        value = (self.headers.get("Retry-After") or "").strip()
        if not value.isascii() or not value.isdigit():
            return None
        return min(float(int(value[:9])), cap)


class _Watchdog:
    """One thread that runs every request's expiry at its deadline.

    A ``threading.Timer`` per request was a thread started and ended per request: at hundreds of
    deliveries a second, a large share of the relay's CPU (bench/relay_throughput.py)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[list[Any]] = []  # [when, seq, fn or None once cancelled]
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, when: float, fn: Callable[[], None]) -> list[Any]:
        """Run ``fn`` at monotonic time ``when`` unless cancelled; the handle for :meth:`cancel`."""
        entry = [when, next(self._seq), fn]
        with self._cond:
            heapq.heappush(self._heap, entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="httpclient-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0] is entry:
                self._cond.notify()
        return entry

    @staticmethod
    def cancel(entry: list[Any]) -> None:
        entry[2] = None  # dropped when it reaches the top: the heap holds at most a deadline's worth

    def _next(self) -> Callable[[], None]:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2] is None:
                    heapq.heappop(self._heap)
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    fn: Callable[[], None] | None = heapq.heappop(self._heap)[2]
                    if fn is not None:
                        return fn
                    continue
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def _run(self) -> None:
        while True:
            fn = self._next()
            try:
                fn()
            except Exception:  # noqa: BLE001, S110 - an expiry must never stop the others'
                pass


_watchdog = _Watchdog()


def getaddrinfo_tcp(host: str, port: int) -> Sequence[AddrInfo]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def resolve(host: str, port: int, deadline: float, resolver: Resolver = getaddrinfo_tcp) -> Sequence[AddrInfo]:
    """``resolver(host, port)`` in a worker thread, waited for ``deadline`` seconds at most.

    IP literals skip the thread.  Raises DeadlineExceeded when the lookup takes longer (it is
    abandoned, not stopped), OSError when it fails or too many lookups are already pending.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass  # a name
    else:
        if ip.version == 4:
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port))]
        return [(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (host, port, 0, 0))]
    if not _pending_lookups.acquire(blocking=False):
        raise OSError(f"{MAX_PENDING_LOOKUPS} DNS lookups already pending; not resolving {host}")
    done = threading.Event()
    result: list[Sequence[AddrInfo]] = []
    error: list[BaseException] = []

    def lookup() -> None:
        try:
            result.append(resolver(host, port))
        except (OSError, ValueError) as e:  # gaierror, or UnicodeError from IDNA: the request's error
            error.append(e)
        finally:
            _pending_lookups.release()
            done.set()

    threading.Thread(target=lookup, name=f"resolve {host[:64]}", daemon=True).start()
    if not done.wait(max(0.0, deadline)):
        raise DeadlineExceeded(f"resolving {host} took longer than {deadline:g}s")
    if error:
        raise error[0]
    if not result or not result[0]:
        raise OSError(f"{host} resolves to no address")
    return result[0]


def _connect_any(addresses: Sequence[AddrInfo], end: float) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts before monotonic time ``end``."""
    last: OSError = OSError("no address to connect to")
    for family, type_, proto, _, sockaddr in addresses:
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, type_, proto)
        try:
            sock.settimeout(remaining)
            sock.connect(sockaddr)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise last


class _Pinned:
    """Connects to addresses resolved beforehand; ``self.host`` (the Host header, and TLS's
    server_hostname) stays the URL's host."""

    addresses: Sequence[AddrInfo] = ()
    end: float = 0.0

    def _create_connection(self, address: object, timeout: object, source_address: object = None) -> socket.socket:
        return _connect_any(self.addresses, self.end)


class _PinnedHTTP(_Pinned, http.client.HTTPConnection):
    pass


class _PinnedHTTPS(_Pinned, http.client.HTTPSConnection):
    pass


def _connection(
    scheme: str, host: str, port: int, deadline: float, ssl_context: ssl.SSLContext | None
) -> _PinnedHTTP | _PinnedHTTPS:
    if scheme == "https":
        return _PinnedHTTPS(host, port, timeout=deadline, context=ssl_context or ssl.create_default_context())
    return _PinnedHTTP(host, port, timeout=deadline)


def _read_capped(resp: http.client.HTTPResponse, max_bytes: int) -> bytes:
    """The whole body, or ResponseTooLarge as soon as it is known to exceed ``max_bytes``."""
    declared = resp.getheader("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > max_bytes:
        raise ResponseTooLarge(f"answer of {int(declared)} bytes exceeds the cap of {max_bytes}")
    chunks: list[bytes] = []
    got = 0
    while True:
        chunk = resp.read1(_READ_CHUNK)
        if not chunk:
            return b"".join(chunks)
        got += len(chunk)
        if got > max_bytes:
            raise ResponseTooLarge(f"answer exceeds the cap of {max_bytes} bytes")
        chunks.append(chunk)


def request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline: float,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
    resolver: Resolver = getaddrinfo_tcp,
) -> Response:
    """Send one request and read the whole answer within ``deadline`` seconds.

    Raises DeadlineExceeded, ResponseTooLarge, or OSError / http.client.HTTPException
    (refused, reset, TLS, malformed answer).  Never follows redirects.  ``resolver`` turns the
    host name into addresses (getaddrinfo's shape); it runs within the deadline.
    """
    start = time.monotonic()
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = _connection(parts.scheme, host, port, deadline, ssl_context)
    conn.addresses, conn.end = resolve(host, port, deadline, resolver), start + deadline
    remaining = start + deadline - time.monotonic()
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/send in the requesting thread
            except OSError:
                pass

    timer = _watchdog.call_at(time.monotonic() + remaining, expire)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        body = _read_capped(resp, max_bytes)
        if expired.is_set():
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s")
        return Response(resp.status, resp.reason, resp.headers, body)
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, ResponseTooLarge | DeadlineExceeded):
            raise
        if expired.is_set() or time.monotonic() - start >= deadline:
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s") from None
        raise
    finally:
        _watchdog.cancel(timer)
        conn.close()
