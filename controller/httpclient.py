"""One HTTP request under a total deadline and a response-size cap.

``urllib``'s and ``http.client``'s ``timeout`` bounds each socket read, not
the request: a server that drips one byte a second holds a request for as
long as it likes.  Here a timer shuts the socket down when the total deadline
passes (connect, TLS handshake, headers and body alike), and the body is
read one socket read at a time, so it never grows past ``max_bytes`` (plus
one read) before the request is abandoned.  Used by pull mode (polls of
Alertmanager) and by the relay (deliveries to controllers).
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlsplit

_READ_CHUNK = 64 * 1024


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


def request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    deadline: float,
    max_bytes: int,
    ssl_context: ssl.SSLContext | None = None,
) -> Response:
    """Send one request and read the whole answer within ``deadline`` seconds.

    Raises DeadlineExceeded, ResponseTooLarge, or OSError / http.client.HTTPException
    (refused, reset, TLS, malformed answer).  Never follows redirects.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            host, parts.port, timeout=deadline, context=ssl_context or ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(host, parts.port, timeout=deadline)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/send in the requesting thread
            except OSError:
                pass

    timer = threading.Timer(deadline, expire)
    timer.daemon = True
    start = time.monotonic()
    timer.start()
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        declared = resp.getheader("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > max_bytes:
            raise ResponseTooLarge(f"answer of {int(declared)} bytes exceeds the cap of {max_bytes}")
        chunks: list[bytes] = []
        got = 0
        while True:
            chunk = resp.read1(_READ_CHUNK)
            if not chunk:
                break
            got += len(chunk)
            if got > max_bytes:
                raise ResponseTooLarge(f"answer exceeds the cap of {max_bytes} bytes")
            chunks.append(chunk)
        if expired.is_set():
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s")
        return Response(resp.status, resp.reason, resp.headers, b"".join(chunks))
    except (OSError, http.client.HTTPException, ValueError) as e:
        if isinstance(e, ResponseTooLarge | DeadlineExceeded):
            raise
        if expired.is_set() or time.monotonic() - start >= deadline:
            raise DeadlineExceeded(f"no complete answer within {deadline:g}s") from None
        raise
    finally:
        timer.cancel()
        conn.close()
