"""HTTP spoken byte by byte over real sockets: what http.client will not send
(raw header bytes, trickled requests, malformed lines), and slow clients."""

from __future__ import annotations

import socket
import ssl
import threading
import time


def read_until_closed(s: socket.socket, limit: float) -> bytes:
    s.settimeout(limit)
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, TimeoutError, ssl.SSLError):
            return data
        if not chunk:
            return data
        data += chunk
    return data


def exchange(port: int, data: bytes, *, timeout: float = 5.0, context: ssl.SSLContext | None = None) -> bytes:
    """Send ``data`` on a fresh connection to 127.0.0.1:port, return everything answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        s = context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw
        s.sendall(data)
        return read_until_closed(s, timeout)


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer; 0 when there was none."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") and parts[1].isdigit() else 0


def header_of(answer: bytes, name: str) -> str | None:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name.lower():
            return v.strip()
    return None


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in answer else b""


class Tricklers:
    """``count`` connections each sending ``request`` one byte every ``interval``
    seconds (slowloris), in background threads, until ``stop()``.  ``closed``
    counts the connections the server has closed."""

    def __init__(self, port: int, count: int, request: bytes, interval: float = 0.5) -> None:
        self.port, self.request, self.interval = port, request, interval
        self.closed = 0
        self.opened = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> Tricklers:
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        try:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        except OSError:
            with self._lock:
                self.closed += 1
            return
        with self._lock:
            self.opened += 1
        with s:
            s.settimeout(self.interval)
            i = 0
            while not self._stop.is_set():
                try:
                    s.sendall(self.request[i % len(self.request) : i % len(self.request) + 1])
                    i += 1
                    if s.recv(4096) == b"":
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
            else:
                return
        with self._lock:
            self.closed += 1

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)
