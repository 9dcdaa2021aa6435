"""Pull mode's limits, against real sockets and the real Alertmanager: a total deadline per poll,
a response-size cap, backoff honouring 429/503 and Retry-After, jitter, and the staleness metric."""

from __future__ import annotations

import random
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable

import pytest

from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.pull import (
    BACKOFF_CAP,
    P_ERROR,
    P_SUCCESS,
    PollResult,
    PullSettings,
    PullSource,
    next_wait,
)
from tests.helpers.alertmanager import alertmanager_config, api_alert, requires_alertmanager
from tests.helpers.sink import RecordingSink
from tests.helpers.wait import free_port, wait_until

STALENESS = "memhp_controller_alertmanager_poll_staleness_seconds"


class RawServer:
    """A loopback TCP server whose every connection is answered by ``answer(conn)`` in its own thread."""

    def __init__(self, answer: Callable[[socket.socket], None]) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.requests: list[float] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.requests.append(time.monotonic())
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.settimeout(30)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                self.answer(conn)
            except OSError:
                pass

    def close(self) -> None:
        self._stop = True
        self.sock.close()
        self._thread.join(5)


@pytest.fixture
def raw_server():
    servers: list[RawServer] = []

    def start(answer: Callable[[socket.socket], None]) -> RawServer:
        s = RawServer(answer)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def source(url: str, **kw) -> tuple[PullSource, RecordingSink, ControllerMetrics]:
    sink, metrics = RecordingSink(), ControllerMetrics()
    settings = PullSettings(url=url, node_name="n1", **kw)
    return PullSource(settings, sink, metrics), sink, metrics


def drip(conn: socket.socket) -> None:
    """A valid answer, one byte every 0.2 s (the slowloris of the issue)."""
    body = b"[]" + b" " * 200
    for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 202\r\n\r\n" + body:
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def test_a_dripping_server_cannot_hold_a_poll_past_its_total_deadline(raw_server):
    server = raw_server(drip)
    src, sink, _ = source(server.url, timeout=1.5)
    started = time.monotonic()
    result = src.poll_once()
    took = time.monotonic() - started
    assert result.result == P_ERROR and "1.5s" in result.error
    assert took < 3.0, took  # per-read timeouts alone would wait for the whole ~56 s answer
    assert sink.batches == []


def big_chunked_answer(conn: socket.socket) -> None:
    """20 MiB of valid JSON, chunked (no Content-Length to refuse it by)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    alert = b'{"labels":{"alertname":"A","instance":"n2"},"annotations":{},"startsAt":"2024-05-01T10:00:00Z"},'
    chunk = alert * 10000
    sent = 0
    conn.sendall(b"%x\r\n[\r\n" % 1)
    while sent < 20 << 20:
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    conn.sendall(b'%x\r\n{"labels":{"alertname":"A"}}]\r\n0\r\n\r\n' % len(b'{"labels":{"alertname":"A"}}]'))


def test_an_answer_over_the_cap_fails_the_poll_without_being_held_in_memory(raw_server):
    server = raw_server(big_chunked_answer)
    cap = 2 << 20
    src, sink, metrics = source(server.url, timeout=20, max_response_bytes=cap)
    tracemalloc.start()
    try:
        result = src.poll_once()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.result == "bad_response" and "cap" in result.error
    assert peak < 3 * cap, peak  # the 20 MiB answer was never read whole
    assert sink.batches == []
    assert metrics.registry.get_sample_value("memhp_controller_alertmanager_polls_total", {"result": "bad_response"})


def status_answer(code: int, retry_after: str | None) -> Callable[[socket.socket], None]:
    def answer(conn: socket.socket) -> None:
        extra = f"Retry-After: {retry_after}\r\n" if retry_after is not None else ""
        conn.sendall(f"HTTP/1.1 {code} Busy\r\nContent-Length: 0\r\n{extra}\r\n".encode())

    return answer


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_is_honoured_by_the_poll_loop(raw_server, code):
    server = raw_server(status_answer(code, "2"))
    src, _, metrics = source(server.url, interval=0.5, timeout=2)
    result = src.poll_once()
    assert result.result == P_ERROR and result.retry_after == 2.0
    server.requests.clear()
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(server.requests) >= 3, timeout=15, desc="three polls")
    finally:
        stop.set()
        thread.join(10)
    gaps = [b - a for a, b in zip(server.requests, server.requests[1:])]
    assert all(g >= 1.9 for g in gaps), gaps  # interval 0.5s, but the server asked for 2s


def test_failures_back_off_exponentially_and_recover_at_the_interval(raw_server):
    answers = {"code": 503}

    def answer(conn: socket.socket) -> None:
        if answers["code"] == 200:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n[]")
        else:
            conn.sendall(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")

    server = raw_server(answer)
    src, _, _ = source(server.url, interval=0.2, timeout=2)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(server.requests) >= 5, timeout=20, desc="five failed polls")
        failing = list(server.requests)
        answers["code"] = 200
        wait_until(lambda: len(server.requests) >= len(failing) + 4, timeout=20, desc="recovered polls")
        recovered = server.requests[len(failing) :]
    finally:
        stop.set()
        thread.join(10)
    gaps = [b - a for a, b in zip(failing, failing[1:])]
    assert gaps[-1] > 2.5 * gaps[0], gaps  # doubling, capped at 8 intervals (1.6s)
    assert max(gaps) < 8 * 0.2 * 1.1 + 0.5, gaps
    later = [b - a for a, b in zip(recovered[1:], recovered[2:])]
    assert all(g < 0.5 for g in later), later  # back to the interval once polls succeed


def test_next_wait_is_jittered_and_capped():
    rng = random.Random(7)
    ok = PollResult(P_SUCCESS)
    waits = {round(next_wait(30, 30, ok, rng), 3) for _ in range(50)}
    assert len(waits) > 40 and min(waits) >= 27 and max(waits) <= 33
    fail = PollResult(P_ERROR)
    assert next_wait(30, 200, fail, rng) == 240  # 8 intervals
    assert next_wait(60, 400, fail, rng) == BACKOFF_CAP
    assert next_wait(30, 30, PollResult(P_ERROR, retry_after=100), rng) >= 100
    assert next_wait(30, 30, PollResult(P_ERROR, retry_after=10_000), rng) == 240


@requires_alertmanager
@pytest.mark.prometheus
def test_staleness_is_the_age_of_the_last_successful_poll(alertmanager):
    port = free_port()
    am = alertmanager(alertmanager_config(), port=port)
    am.post_alerts([api_alert("MemoryBlocksOffline", {"instance": "n1"})])
    src, sink, metrics = source(am.url, interval=0.1, timeout=2)
    get = metrics.registry.get_sample_value
    assert src.poll_once().result == P_SUCCESS
    assert get(STALENESS) < 1.0
    am.stop()
    time.sleep(1.5)
    assert src.poll_once().result == P_ERROR
    assert get(STALENESS) >= 1.5  # failed polls do not refresh it
    am.start()
    assert src.poll_once().result == P_SUCCESS
    assert get(STALENESS) < 1.0
