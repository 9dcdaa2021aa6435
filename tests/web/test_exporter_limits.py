"""Issue 12: the exporter has the controller's limits: header and request deadlines,
a connection bound, and a concurrency limit beyond which a scrape is refused at once."""

from __future__ import annotations

import http.client
import threading
import time

import pytest

from memhp.exporter.cli import main as exporter_main
from memhp.exporter.server import registry_renderer, serve
from memhp.web import Limits
from tests.helpers.rawhttp import Tricklers, exchange, status_of
from tests.helpers.wait import wait_until

# Well inside the 5 s header deadline the slow clients get; not a benchmark (the machine may be loaded).
PROMPT = 3.0


def get(port: int, path: str = "/metrics", headers: dict | None = None) -> tuple[int, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - started
    finally:
        conn.close()


class SlowRenderer:
    """A renderer that holds each scrape until released: scrapes in flight, on demand."""

    def __init__(self, registry) -> None:
        self.inner = registry_renderer(registry)
        self.release = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def __call__(self, accept, params, gzip=False):
        with self._lock:
            self.waiting += 1
        self.release.wait(20)
        return self.inner(accept, params, gzip=gzip)


def test_scrapes_beyond_the_concurrency_limit_are_refused_at_once(registry):
    slow = SlowRenderer(registry)
    httpd = serve(slow, "127.0.0.1:0", limits=Limits(max_concurrency=2))
    results: list[int] = []
    holders = [threading.Thread(target=lambda: results.append(get(httpd.port)[0])) for _ in range(2)]
    try:
        for t in holders:
            t.start()
        wait_until(lambda: slow.waiting == 2, timeout=5, desc="two scrapes in flight")
        status, body, took = get(httpd.port)
        assert status == 503 and took < PROMPT, (status, took)
        status, body, took = get(httpd.port, "/-/healthy")
        assert (status, body) == (200, b"OK\n") and took < PROMPT
    finally:
        slow.release.set()
        for t in holders:
            t.join(10)
    assert results == [200, 200]
    assert get(httpd.port)[0] == 200
    httpd.shutdown()


def test_exporter_header_deadline_and_connection_bound(registry):
    httpd = serve(registry, "127.0.0.1:0", limits=Limits(header_timeout=0.8, max_connections=4))
    slow = Tricklers(httpd.port, 12, b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 10000, interval=0.3).start()
    try:
        wait_until(lambda: slow.opened == 12, timeout=10, desc="12 slow connections opened")
        for _ in range(3):
            status, body, took = get(httpd.port)
            assert status == 200 and b"memhp_blocks{" in body and took < PROMPT, took
        assert httpd.connections <= 4
        wait_until(lambda: slow.closed == 12, timeout=5, desc="every slow client cut (evicted or at the deadline)")
    finally:
        slow.stop()
        httpd.shutdown()


def test_exporter_other_methods_and_bad_requests(registry):
    httpd = serve(registry, "127.0.0.1:0")
    try:
        answer = exchange(httpd.port, b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}")
        assert status_of(answer) == 405 and b"Allow: GET, HEAD" in answer
        assert status_of(exchange(httpd.port, b"GARBAGE\r\n\r\n")) == 400
        assert status_of(exchange(httpd.port, b"HEAD /metrics HTTP/1.0\r\n\r\n")) == 200
        assert get(httpd.port, "/nope")[0] == 404
    finally:
        httpd.shutdown()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--web.max-concurrency", "0"], "at least 1"),
        (["--web.max-connections", "0"], "at least 1"),
        (["--web.header-timeout", "0s"], "positive"),
        (["--web.config.file", "/nonexistent/web.yml"], "cannot read"),
    ],
)
def test_exporter_limit_flags_are_checked(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        exporter_main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
