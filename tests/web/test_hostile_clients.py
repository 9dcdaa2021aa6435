"""Issue 11, the HTTP side: hostile and broken clients against a real controller webhook server.

Every test here fails on the server before memhp.web (http.server based): slow
unauthenticated connections held every request slot, some inputs crashed the
request thread, Latin-1 headers broke UTF-8 tokens, raw control bytes reached
the log, unknown methods got 501.
"""

from __future__ import annotations

import json
import logging
import socket
import time

import pytest

from memhp.controller.sources.alertmanager_payload import (
    MAX_ALERTS,
    MAX_FINGERPRINT_CHARS,
    MAX_LABEL_VALUE_BYTES,
    MAX_LABELS,
)
from memhp.controller.sources.webhook import WEBHOOK_PATH
from tests.helpers.rawhttp import Tricklers, exchange, header_of, status_of
from tests.helpers.wait import wait_until
from tests.helpers.web import TOKEN, payload

# Well inside the 5 s header deadline the slow clients get; not a benchmark (the machine may be loaded).
PROMPT = 3.0

SLOW_REQUEST = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-Pad: ".encode() + b"a" * 10000


def _timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


# --------------------------------------------------------------------------- slowloris


def test_slow_unauthenticated_connections_starve_neither_health_nor_authenticated_posts(controller):
    c = controller()  # default limits: 16 request slots, 64 connections
    slow = Tricklers(c.port, 20, SLOW_REQUEST, interval=0.3).start()
    try:
        wait_until(lambda: c.handle.connections >= 20, timeout=10, desc="20 slow connections open")
        for _ in range(3):
            (status, body, _), took = _timed(lambda: c.request("GET", "/-/healthy", token=None))
            assert (status, body) == (200, b"OK\n") and took < PROMPT, took
            (status, _, _), took = _timed(lambda: c.request(body=payload()))
            assert status == 200 and took < PROMPT, took
        # the slow ones hold no request slot
        wait_until(lambda: c.handle.in_flight == 0, timeout=2, desc="no request slot held")
        assert slow.closed == 0  # and are still there: the requests above did not need to push them out
    finally:
        slow.stop()
    assert len(c.sink.batches) == 3


def test_at_the_connection_bound_the_slowest_make_room(controller):
    c = controller(max_connections=8)
    slow = Tricklers(c.port, 16, SLOW_REQUEST, interval=0.3).start()
    try:
        wait_until(lambda: slow.opened == 16, timeout=10, desc="16 slow connections opened")
        assert c.handle.connections <= 8
        for _ in range(3):
            (status, _, _), took = _timed(lambda: c.request("GET", "/-/healthy", token=None))
            assert status == 200 and took < PROMPT, took
            (status, _, _), took = _timed(lambda: c.request(body=payload()))
            assert status == 200 and took < PROMPT, took
    finally:
        slow.stop()
    assert c.rejected("connection_limit") >= 8


def test_headers_have_a_deadline_of_their_own(controller):
    c = controller(header_timeout=0.8, read_timeout=30)
    slow = Tricklers(c.port, 1, SLOW_REQUEST, interval=0.2).start()
    try:
        wait_until(lambda: slow.closed == 1, timeout=4, desc="the slow client cut at the header deadline")
    finally:
        slow.stop()
    assert c.rejected("read_timeout") == 1


# --------------------------------------------------------------------------- inputs that crashed request threads


def _post_raw(c, body: bytes, content_length: bytes | None = None) -> bytes:
    length = content_length if content_length is not None else str(len(body)).encode()
    head = (
        (
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        + b"Content-Length: "
        + length
        + b"\r\n\r\n"
    )
    return exchange(c.port, head + body)


def _alert_body(**alert_extra) -> bytes:
    return json.dumps(payload(**alert_extra)).encode()


CRASHERS = {
    "json nested 2000 deep": (b"[" * 2000 + b"]" * 2000, None, "bad_json"),
    "object nested 1500 deep": (b'{"a":' * 1500 + b"1" + b"}" * 1500, None, "bad_json"),
    "offset of 24h": (_alert_body(startsAt="2024-05-01T10:00:00+24:00"), None, "invalid_payload"),
    "offset of 99h": (_alert_body(startsAt="2024-05-01T10:00:00-99:00"), None, "invalid_payload"),
    "past year 9999 in UTC": (_alert_body(startsAt="9999-12-31T23:59:59-01:00"), None, "invalid_payload"),
    "before year 1 in UTC": (_alert_body(startsAt="0001-01-01T00:00:00+01:00"), None, "invalid_payload"),
    "endsAt past year 9999": (_alert_body(endsAt="9999-12-31T23:59:59-23:59"), None, "invalid_payload"),
    "lone surrogate, no fingerprint": (
        json.dumps({**payload(), "alerts": [{**payload()["alerts"][0], "labels": {"alertname": "A", "x": "\ud800"}}]})
        .replace(', "fingerprint": "0123456789abcdef"', "")
        .encode(),
        None,
        "invalid_payload",
    ),
    "Content-Length: superscript two": (_alert_body(), b"\xb2", "bad_content_length"),
    "Content-Length: arabic-indic zero": (_alert_body(), "٠".encode(), "bad_content_length"),
    "Content-Length: negative": (_alert_body(), b"-1", "bad_content_length"),
}


@pytest.mark.parametrize("case", sorted(CRASHERS))
def test_inputs_that_crashed_request_threads_get_400_and_one_log_line(controller, thread_crashes, caplog, case):
    body, length, reason = CRASHERS[case]
    c = controller()
    caplog.set_level(logging.DEBUG, logger="memhp")
    answer = _post_raw(c, body, length)
    assert status_of(answer) == 400, answer[:300]
    assert f'"reason": "{reason}"'.encode() in answer
    assert c.rejected(reason) == 1
    lines = [r for r in caplog.records if "refused" in r.getMessage() and reason in r.getMessage()]
    assert len(lines) == 1
    assert not [r for r in caplog.records if r.exc_info], "no traceback is logged"
    assert thread_crashes == []
    assert c.sink.batches == []
    assert c.request(body=payload())[0] == 200  # and the server goes on


# --------------------------------------------------------------------------- bounded payload fields


def _alert(**extra) -> dict:
    return {**payload()["alerts"][0], **extra}


BOUNDS = {
    "label value too long": payload(labels={"alertname": "A", "x": "v" * (MAX_LABEL_VALUE_BYTES + 1)}),
    "too many labels": payload(labels={"alertname": "A", **{f"l{i}": "v" for i in range(MAX_LABELS)}}),
    "fingerprint too long": payload(fingerprint="f" * (MAX_FINGERPRINT_CHARS + 1)),
    "too many alerts": {**payload(), "alerts": [_alert(fingerprint=f"{i:016x}") for i in range(MAX_ALERTS + 1)]},
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_every_field_taken_from_a_payload_is_bounded(controller, case):
    c = controller(max_body_bytes=8 << 20)
    status, body, _ = c.request(body=BOUNDS[case])
    assert status == 400 and json.loads(body)["reason"] == "invalid_payload", body[:300]
    assert c.sink.batches == []


def test_payloads_at_the_bounds_are_accepted(controller):
    c = controller(max_body_bytes=8 << 20)
    labels = {"alertname": "A", "x": "v" * MAX_LABEL_VALUE_BYTES, **{f"l{i}": "v" for i in range(MAX_LABELS - 2)}}
    doc = {**payload(), "alerts": [_alert(labels=labels, fingerprint=f"{i:064x}") for i in range(MAX_ALERTS)]}
    status, body, _ = c.request(body=doc)
    assert status == 200, body[:300]
    assert len(c.sink.alerts) == MAX_ALERTS


# --------------------------------------------------------------------------- credentials


def test_non_ascii_bearer_token_matches(controller, tmp_path):
    token = "tökén-🙂-ß-0123456789"
    secret = tmp_path / "utf8-token"
    secret.write_text(token + "\n", encoding="utf-8")
    secret.chmod(0o600)
    c = controller(bearer_token_file=str(secret))
    body = _alert_body()
    head = (
        f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nAuthorization: Bearer ".encode()
        + token.encode("utf-8")
        + b"\r\n\r\n"
    )
    assert status_of(exchange(c.port, head + body)) == 200
    wrong = head.replace("🙂".encode(), "🙃".encode())
    assert status_of(exchange(c.port, wrong + body)) == 401


# --------------------------------------------------------------------------- log lines


def test_control_bytes_from_unauthenticated_clients_are_escaped_and_rate_limited(controller, caplog):
    c = controller()
    caplog.set_level(logging.DEBUG, logger="memhp")
    for i in range(40):
        answer = exchange(c.port, f"GET /\x1b[2J\x1b]0;pwned\x07{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert status_of(answer) == 401
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("memhp")]
    assert messages and not any("\x1b" in m or "\x07" in m for m in messages)
    refused = [m for m in messages if "auth_missing" in m]
    assert 1 <= len(refused) <= 6, refused  # 40 refusals, a handful of lines
    assert "\\x1b[2J" in refused[0]
    assert c.rejected("auth_missing") == 40  # all counted


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize(
    "method, path, allow",
    [
        ("PUT", WEBHOOK_PATH, "POST"),
        ("DELETE", WEBHOOK_PATH, "POST"),
        ("PATCH", WEBHOOK_PATH, "POST"),
        ("OPTIONS", WEBHOOK_PATH, "POST"),
        ("GET", WEBHOOK_PATH, "POST"),
        ("FROB", "/metrics", "GET, HEAD"),
        ("POST", "/-/healthy", "GET, HEAD"),
        ("DELETE", "/-/healthy", "GET, HEAD"),
    ],
)
def test_other_methods_get_405_with_allow(controller, method, path, allow):
    c = controller()
    answer = exchange(c.port, f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert status_of(answer) == 405 and header_of(answer, "Allow") == allow, answer[:200]
    assert c.sink.batches == []


def test_when_every_connection_is_past_its_headers_a_new_one_is_refused_at_once(controller):
    c = controller(max_connections=2, max_concurrency=4, read_timeout=20)
    holders = []
    try:
        for _ in range(2):  # authenticated, body still arriving: not evictable
            s = socket.create_connection(("127.0.0.1", c.port), timeout=10)
            s.sendall(
                f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Length: 100\r\n\r\n{".encode()
            )
            holders.append(s)
        wait_until(lambda: c.handle.in_flight == 2, timeout=5, desc="two requests in flight")
        # Issue 19: health is answered on the connections kept for it; anything else there is refused at once.
        answer, took = _timed(lambda: exchange(c.port, b"GET /-/healthy HTTP/1.0\r\n\r\n"))
        assert status_of(answer) == 200 and took < PROMPT
        (status, _, resp), took = _timed(lambda: c.request(body=payload()))
        assert status == 503 and resp.getheader("Retry-After") == "1" and took < PROMPT
        assert c.rejected("connection_limit") == 1
    finally:
        for s in holders:
            s.close()
    wait_until(lambda: c.handle.connections == 0, timeout=5, desc="connections closed")
    assert c.request("GET", "/-/healthy", token=None)[0] == 200


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
        (b"GET /\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 400),
        (b"G\x00T / HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\n folded: header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nno-colon\r\n\r\n", 400),
        (b"GET http://[::1 HTTP/1.1\r\n\r\n", 400),
        (b"POST /webhook/alertmanager HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    ],
)
def test_malformed_requests_get_a_status_never_a_crash(controller, thread_crashes, raw, status):
    c = controller()
    assert status_of(exchange(c.port, raw)) == status
    assert c.rejected("bad_http") == 1
    assert thread_crashes == []
    assert c.request("GET", "/-/healthy", token=None)[0] == 200
