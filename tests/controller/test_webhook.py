"""Webhook receiver: payload validation, and the HTTP server driven with real requests on loopback.

Alertmanager itself delivering to the receiver is in test_webhook_alertmanager.py.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import socket
import ssl
import time

import pytest

from memhp.controller.alert import FIRING, RESOLVED
from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.common import canonical_time, labels_fingerprint
from memhp.controller.sources.webhook import (
    DEFAULT_LISTEN_ADDRESS,
    WEBHOOK_PATH,
    PayloadError,
    WebhookConfigError,
    WebhookSettings,
    add_webhook_arguments,
    parse_webhook_payload,
    serve,
    settings_from_args,
    validate_settings,
)
from memhp.units import parse_duration
from tests.helpers.sink import RecordingSink
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import wait_until
from tests.helpers.web import TOKEN, rejected, secret_file, webhook_body


def alert(name="MemoryBlocksOffline", status=FIRING, labels=None, **extra):
    doc = {
        "status": status,
        "labels": {"alertname": name, "node": "n1", **(labels or {})},
        "annotations": {"summary": "s"},
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prom/graph",
        "fingerprint": "0123456789abcdef",
    }
    doc.update(extra)
    return doc


def payload(*alerts, **extra):
    group = {"alertname": "MemoryBlocksOffline"}
    envelope = {"groupKey": '{}:{alertname="MemoryBlocksOffline"}', "groupLabels": group, "commonLabels": group}
    doc = webhook_body(list(alerts) or [alert()], **envelope)
    doc.update(extra)  # may replace "alerts" too
    return doc


# --------------------------------------------------------------------------- payload parsing


def test_each_alert_keeps_its_own_status_in_a_mixed_group():
    body = payload(alert("A", FIRING), alert("B", RESOLVED, endsAt="2024-05-01T10:05:00Z"), status=FIRING)
    alerts = parse_webhook_payload(json.dumps(body).encode())
    assert [(a.name, a.status) for a in alerts] == [("A", FIRING), ("B", RESOLVED)]
    assert alerts[1].ends_at == "2024-05-01T10:05:00.000Z"
    assert alerts[0].ends_at is None  # Go's zero time means "no end"
    assert all(a.source == "webhook" for a in alerts)


def test_times_are_normalised_and_fingerprint_kept():
    a = parse_webhook_payload(json.dumps(payload(alert(startsAt="2024-05-01T12:00:00.123456789+02:00"))).encode())[0]
    assert a.starts_at == "2024-05-01T10:00:00.123Z"
    assert a.fingerprint == "0123456789abcdef"
    assert a.occurrence == ("0123456789abcdef", "2024-05-01T10:00:00.123Z")
    assert a.labels == {"alertname": "MemoryBlocksOffline", "node": "n1"}
    assert a.annotations == {"summary": "s"}


def test_fingerprint_stamped_when_absent_matches_alertmanagers():
    # Known answers computed by Alertmanager 0.25 itself for these label sets.
    assert labels_fingerprint({"alertname": "A", "node": "n1"}) == "e8dbc7c38dc6e332"
    assert labels_fingerprint({"alertname": "B", "node": "n2", "x": "ü"}) == "347ed4a4e5029fbd"
    raw = alert("A")
    del raw["fingerprint"]
    raw["labels"] = {"alertname": "A", "node": "n1"}
    assert parse_webhook_payload(json.dumps(payload(raw)).encode())[0].fingerprint == "e8dbc7c38dc6e332"


def test_canonical_time_forms():
    assert canonical_time("2024-05-01T10:00:00Z") == "2024-05-01T10:00:00.000Z"
    assert canonical_time("2024-05-01T10:00:00.9999Z") == "2024-05-01T10:00:00.999Z"
    assert canonical_time("2024-05-01T00:30:00.5-01:00") == "2024-05-01T01:30:00.500Z"
    assert parse_duration("500ms") == 0.5 and parse_duration("1m30s") == 90 and parse_duration("2") == 2


def _without(doc, key):
    doc = dict(doc)
    del doc[key]
    return doc


BAD_PAYLOADS = {
    "not json": (b"{nope", "bad_json"),
    "not utf-8": (b"\xff\xfe{}", "bad_json"),
    "NaN": (json.dumps(payload()).replace('"truncatedAlerts": 0', '"truncatedAlerts": NaN').encode(), "bad_json"),
    "array": (b"[]", "invalid_payload"),
    "version 3": (json.dumps(payload(version="3")).encode(), "bad_version"),
    "version as number": (json.dumps(payload(version=4)).encode(), "bad_version"),
    "no version": (json.dumps(_without(payload(), "version")).encode(), "bad_version"),
    "group status unknown": (json.dumps(payload(status="pending")).encode(), "invalid_payload"),
    "alerts not a list": (json.dumps(payload(alerts={})).encode(), "invalid_payload"),
    "no alerts": (json.dumps(payload(alerts=[])).encode(), "invalid_payload"),
    "alert status unknown": (json.dumps(payload(alert(status="pending"))).encode(), "invalid_payload"),
    "alert not an object": (json.dumps(payload("x")).encode(), "invalid_payload"),
    "labels not an object": (json.dumps(payload(alert(labels=None) | {"labels": ["a"]})).encode(), "invalid_payload"),
    "label value not a string": (json.dumps(payload(alert(labels={"blocks": 4}))).encode(), "invalid_payload"),
    "missing alertname": (json.dumps(payload(alert() | {"labels": {"node": "n1"}})).encode(), "invalid_payload"),
    "empty alertname": (json.dumps(payload(alert(name=""))).encode(), "invalid_payload"),
    "annotations wrong type": (json.dumps(payload(alert(annotations="x"))).encode(), "invalid_payload"),
    "startsAt missing": (json.dumps(payload(_without(alert(), "startsAt"))).encode(), "invalid_payload"),
    "startsAt garbage": (json.dumps(payload(alert(startsAt="yesterday"))).encode(), "invalid_payload"),
    "startsAt not a date": (json.dumps(payload(alert(startsAt="2024-02-30T00:00:00Z"))).encode(), "invalid_payload"),
    "fingerprint not a string": (json.dumps(payload(alert(fingerprint=7))).encode(), "invalid_payload"),
    "commonLabels wrong type": (json.dumps(payload(commonLabels={"a": 1})).encode(), "invalid_payload"),
    "truncatedAlerts negative": (json.dumps(payload(truncatedAlerts=-1)).encode(), "invalid_payload"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAYLOADS))
def test_invalid_payloads_are_rejected_with_a_reason(case):
    body, reason = BAD_PAYLOADS[case]
    with pytest.raises(PayloadError) as e:
        parse_webhook_payload(body)
    assert e.value.reason == reason


# --------------------------------------------------------------------------- settings


def test_authentication_is_required_by_default():
    with pytest.raises(WebhookConfigError, match="authentication is required"):
        validate_settings(WebhookSettings())


@pytest.mark.parametrize("address", ["0.0.0.0:0", ":0", "[::]:0", "192.0.2.10:10302"])
def test_refuses_non_loopback_listener_without_auth(address):
    with pytest.raises(WebhookConfigError, match="non-loopback"):
        serve(WebhookSettings(listen_address=address, no_auth=True), RecordingSink(), ControllerMetrics())


def test_non_loopback_with_auth_passes_validation(tmp_path):
    # Validation only: tests never open a non-loopback listener.
    validate_settings(
        WebhookSettings(listen_address="0.0.0.0:10302", bearer_token_file=str(secret_file(tmp_path / "t", TOKEN)))
    )


def test_contradictory_or_incomplete_settings(tmp_path):
    tok = str(secret_file(tmp_path / "t", TOKEN))
    with pytest.raises(WebhookConfigError, match="contradicts"):
        validate_settings(WebhookSettings(listen_address="127.0.0.1:0", no_auth=True, bearer_token_file=tok))
    with pytest.raises(WebhookConfigError, match="both"):
        validate_settings(WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=tok, tls_cert_file="/x.crt"))
    with pytest.raises(WebhookConfigError, match="host:port"):
        validate_settings(WebhookSettings(listen_address="127.0.0.1", bearer_token_file=tok))


@pytest.mark.parametrize(
    "content,kind",
    [
        ("", "bearer"),
        ("two words", "bearer"),
        ("a\nb", "bearer"),
        ("nocolon", "basic"),
        (":pw", "basic"),
        ("user:", "basic"),
        (None, "bearer"),
    ],
)
def test_bad_secret_files_refused_at_start(tmp_path, content, kind):
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    key = "bearer_token_file" if kind == "bearer" else "basic_auth_file"
    with pytest.raises(WebhookConfigError):
        serve(WebhookSettings(listen_address="127.0.0.1:0", **{key: str(path)}), RecordingSink(), ControllerMetrics())


def test_flags_round_trip(tmp_path):
    parser = argparse.ArgumentParser()
    add_webhook_arguments(parser)
    tok = str(secret_file(tmp_path / "t", TOKEN))
    args = parser.parse_args(
        [
            "--web.auth.bearer-token-file",
            tok,
            "--web.read-timeout",
            "500ms",
            "--web.max-body-bytes",
            "2048",
            "--web.max-concurrency",
            "3",
        ]
    )
    s = settings_from_args(args)
    assert s == WebhookSettings(
        listen_address=DEFAULT_LISTEN_ADDRESS,
        bearer_token_file=tok,
        read_timeout=0.5,
        max_body_bytes=2048,
        max_concurrency=3,
    )
    with pytest.raises(WebhookConfigError):
        settings_from_args(parser.parse_args([]))  # no auth at all
    assert settings_from_args(parser.parse_args(["--web.no-auth"])).no_auth


# --------------------------------------------------------------------------- HTTP


def test_valid_delivery_is_accepted_and_counted(receiver):
    r = receiver()
    status, body, _ = r.request(body=payload(alert("A"), alert("B", RESOLVED, fingerprint="fedcba9876543210")))
    assert status == 200 and body["accepted"] == 2 and body["firing"] == 1 and body["resolved"] == 1
    assert [(a.name, a.status) for a in r.sink.alerts] == [("A", FIRING), ("B", RESOLVED)]
    get = r.metrics.registry.get_sample_value
    assert get("memhp_controller_alerts_received_total", {"source": "webhook", "status": "firing"}) == 1
    assert get("memhp_controller_alerts_received_total", {"source": "webhook", "status": "resolved"}) == 1


@pytest.mark.parametrize(
    "case", ["not json", "version 3", "label value not a string", "missing alertname", "no alerts"]
)
def test_invalid_bodies_get_400_with_json_error_and_no_action(receiver, case):
    r = receiver()
    body, reason = BAD_PAYLOADS[case]
    status, doc, _ = r.request(body=body)
    assert status == 400
    assert doc["status"] == "error" and doc["reason"] == reason and doc["message"]
    assert r.sink.batches == []
    assert rejected(r.metrics, reason) == 1


def test_missing_and_wrong_credentials_are_refused(receiver, tmp_path):
    r = receiver()
    cases = [
        (None, {}, "auth_missing"),
        ("wrong", {}, "auth_failed"),
        (TOKEN + "x", {}, "auth_failed"),
        (None, {"Authorization": "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode()}, "auth_failed"),
        (None, {"Authorization": f"Token {TOKEN}"}, "auth_missing"),
        (None, {"Authorization": "Bearer"}, "auth_failed"),
    ]
    for token, headers, reason in cases:
        before = rejected(r.metrics, reason)
        status, doc, resp = r.request(body=payload(), token=token, headers=headers)
        assert status == 401, (token, headers)
        assert doc["reason"] == reason
        assert resp.getheader("WWW-Authenticate") == 'Bearer realm="memhp"'
        assert rejected(r.metrics, reason) == before + 1
    assert r.sink.batches == []
    assert r.request(body=payload())[0] == 200


def test_basic_auth(receiver, tmp_path):
    r = receiver(bearer_token_file=None, basic_auth_file=str(secret_file(tmp_path / "basic", "am:pa:ss wörd")))

    def basic(user, password):
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    assert r.request(body=payload(), token=None, headers=basic("am", "pa:ss wörd"))[0] == 200
    for headers in (basic("am", "pa:ss"), basic("AM", "pa:ss wörd"), basic("", ""), {"Authorization": "Basic !!"}):
        assert r.request(body=payload(), token=None, headers=headers)[0] == 401
    assert r.request(body=payload(), token=TOKEN)[0] == 401  # bearer not configured
    assert len(r.sink.batches) == 1


def test_token_rotation_by_rename(receiver, tmp_path):
    r = receiver()
    new = secret_file(tmp_path / "token.new", "rotated-token")
    os.replace(new, tmp_path / "token")
    assert r.request(body=payload(), token=TOKEN)[0] == 401
    assert r.request(body=payload(), token="rotated-token")[0] == 200


def test_metrics_need_auth_and_health_does_not(receiver):
    r = receiver()
    assert r.request("GET", "/-/healthy", token=None)[:2] == (200, b"OK\n")
    assert r.request("GET", "/metrics", token=None)[0] == 401
    status, data, resp = r.request("GET", "/metrics")
    assert status == 200 and resp.getheader("Content-Type").startswith("text/plain")
    assert b'memhp_controller_requests_rejected_total{reason="auth_missing"} 1.0' in data


def test_unknown_path_and_wrong_method(receiver):
    r = receiver()
    assert r.request(path="/elsewhere", body=payload())[0] == 404
    assert r.request("GET", WEBHOOK_PATH)[0] == 405
    status, _, resp = r.request("DELETE", WEBHOOK_PATH)  # issue 11: 405 with Allow, not 501
    assert status == 405 and resp.getheader("Allow") == "POST"
    assert r.sink.batches == []


def test_oversized_body_refused_before_it_is_read(receiver):
    r = receiver(max_body_bytes=1000)
    # Declares 64 MiB and sends none of it: the answer must come from the header alone.
    with r.raw() as s:
        s.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {64 << 20}\r\n\r\n".encode()
        )
        answer = _read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.0 413 ")
    assert b'"reason": "body_too_large"' in answer
    # A body just over the limit sent in full also gets 413 (and a clean answer, not a reset).
    body = json.dumps(payload(alert(annotations={"pad": "x" * 1000}))).encode()
    status, doc, _ = r.request(body=body)
    assert status == 413 and doc["limit"] == 1000
    assert rejected(r.metrics, "body_too_large") == 2
    assert r.sink.batches == []
    small = json.dumps(payload()).encode()
    assert len(small) < 1000 and r.request(body=small)[0] == 200


def test_chunked_or_lengthless_bodies_refused(receiver):
    r = receiver()
    with r.raw() as s:
        s.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".encode()
        )
        assert s.recv(65536).startswith(b"HTTP/1.0 411 ")
    with r.raw() as s:
        s.sendall(f"POST {WEBHOOK_PATH} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        assert s.recv(65536).startswith(b"HTTP/1.0 411 ")
    assert rejected(r.metrics, "length_required") == 2 and r.sink.batches == []


def test_queue_full_is_429_and_unavailable_is_503(receiver):
    r = receiver()
    r.sink.full = True
    status, doc, resp = r.request(body=payload())
    assert status == 429 and doc["reason"] == "queue_full" and resp.getheader("Retry-After")
    r.sink.full, r.sink.unavailable = False, True
    status, doc, _ = r.request(body=payload())
    assert status == 503 and doc["reason"] == "sink_unavailable"
    assert r.sink.batches == [] and r.sink.refused == 2
    assert rejected(r.metrics, "queue_full") == 1 and rejected(r.metrics, "sink_unavailable") == 1
    r.sink.unavailable = False
    assert r.request(body=payload())[0] == 200


def test_a_crashing_sink_is_500_so_alertmanager_retries(receiver):
    r = receiver()

    def boom(alerts):
        raise RuntimeError("engine bug")

    r.sink.submit = boom
    status, doc, _ = r.request(body=payload())
    assert status == 500 and doc["reason"] == "sink_error"


def _read_until_closed(s: socket.socket, limit: float) -> bytes:
    s.settimeout(limit)
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_slow_headers_are_cut_at_the_deadline(receiver):
    """Slowloris: a client trickling header bytes faster than any per-read timeout is still cut off."""
    r = receiver(read_timeout=0.6)
    request = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n".encode() + b"X" * 1000
    started = time.monotonic()
    with r.raw() as s:
        s.settimeout(0.1)
        answer = b""
        for i in range(len(request)):  # bounded: at most ~100 s, cut long before
            if time.monotonic() - started > 5:
                break
            try:
                s.sendall(request[i : i + 1])
            except OSError:
                break  # the server closed the connection
            try:
                chunk = s.recv(4096)
                if chunk:
                    answer += chunk
                if not chunk or answer:
                    break
            except TimeoutError:
                pass
        answer += _read_until_closed(s, 5)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    assert answer.startswith(b"HTTP/1.0 408 ")
    assert rejected(r.metrics, "read_timeout") == 1
    assert r.sink.batches == []


def test_stalled_body_is_cut_at_the_deadline(receiver):
    r = receiver(read_timeout=0.5)
    body = json.dumps(payload()).encode()
    started = time.monotonic()
    with r.raw() as s:
        s.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body[:10]
        )
        answer = _read_until_closed(s, 5)
    assert time.monotonic() - started < 3
    assert answer.startswith(b"HTTP/1.0 408 ")
    assert rejected(r.metrics, "read_timeout") == 1 and r.sink.batches == []


def test_concurrency_is_bounded(receiver):
    r = receiver(max_concurrency=2, read_timeout=20)
    holders = [r.raw(), r.raw()]
    try:
        for s in holders:
            # An authenticated request whose body is still arriving holds a slot (issue 11:
            # a connection that has not authenticated yet holds none).
            s.sendall(
                f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
                f"Content-Length: 100\r\n\r\n{{".encode()
            )
        wait_until(lambda: r.handle.in_flight == 2, timeout=5, desc="two requests in flight")
        status, doc, resp = r.request(body=payload())
        assert status == 503 and doc["reason"] == "overloaded" and resp.getheader("Retry-After")
        assert rejected(r.metrics, "overloaded") == 1
        assert r.request("GET", "/-/healthy", token=None)[0] == 200  # health needs no slot
        assert r.handle.in_flight == 2
    finally:
        for s in holders:
            s.close()
    wait_until(lambda: r.handle.in_flight == 0, timeout=5, desc="workers released")
    assert r.request(body=payload())[0] == 200


def test_tls(receiver, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    r = receiver(tls_cert_file=str(cert), tls_key_file=str(key))
    assert r.handle.url.startswith("https://127.0.0.1:")
    r.context = ssl.create_default_context(cafile=str(cert))
    status, doc, _ = r.request(body=payload())
    assert status == 200 and len(r.sink.alerts) == 1
    assert r.request(body=payload(), token="wrong")[0] == 401
    # Plain HTTP to the TLS port: the handshake fails, nothing is accepted.
    with r.raw() as s:
        s.sendall(f"POST {WEBHOOK_PATH} HTTP/1.0\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode())
        _read_until_closed(s, 5)
    wait_until(lambda: rejected(r.metrics, "tls_handshake") == 1, timeout=5, desc="handshake failure counted")
    assert len(r.sink.alerts) == 1


def test_tls_handshake_is_under_the_deadline(receiver, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    r = receiver(tls_cert_file=str(cert), tls_key_file=str(key), read_timeout=0.5, max_concurrency=1)
    started = time.monotonic()
    with r.raw() as s:  # connects and never starts the handshake
        _read_until_closed(s, 5)
    assert time.monotonic() - started < 3
    # The handler closes the socket at the deadline, a moment before its
    # thread gives the slot back: wait for that, then the only worker serves.
    wait_until(lambda: r.handle.in_flight == 0, timeout=5)
    r.context = ssl.create_default_context(cafile=str(cert))
    assert r.request(body=payload())[0] == 200  # the only worker was freed


def test_no_auth_on_loopback(receiver):
    r = receiver(bearer_token_file=None, no_auth=True, listen_address="localhost:0")
    assert r.request(body=payload(), token=None)[0] == 200


def test_shutdown_frees_the_port(receiver):
    r = receiver()
    port = r.handle.port
    r.handle.shutdown()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback_listener(receiver):
    r = receiver(listen_address="[::1]:0")
    assert r.handle.url.startswith("http://[::1]:")
    conn = http.client.HTTPConnection("::1", r.handle.port, timeout=10)
    conn.request("POST", WEBHOOK_PATH, body=json.dumps(payload()), headers={"Authorization": f"Bearer {TOKEN}"})
    assert conn.getresponse().status == 200
    conn.close()
    assert len(r.sink.alerts) == 1
