"""Pull mode without a server: settings, flags, the query it builds, the answers it refuses.

Against the real Alertmanager: test_pull_alertmanager.py.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import threading
from urllib.parse import parse_qs, urlsplit

import pytest

from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.pull import (
    P_ERROR,
    P_SUCCESS,
    PullConfigError,
    PullSettings,
    PullSource,
    _BadResponse,
    add_pull_arguments,
    pull_settings_from_args,
)
from tests.helpers.sink import RecordingSink


def settings(**kw) -> PullSettings:
    base = dict(url="http://127.0.0.1:9093", node_name="n1")
    base.update(kw)
    return PullSettings(**base)


def test_query_asks_for_active_unsilenced_uninhibited_alerts_of_this_node():
    s = settings(node_name='we"ird\\node', extra_filters=('severity=~"page|warning"',), receiver="memhp.*")
    url = urlsplit(s.alerts_url())
    assert url.path == "/api/v2/alerts"
    q = parse_qs(url.query)
    assert q["active"] == ["true"] and q["silenced"] == ["false"] and q["inhibited"] == ["false"]
    assert q["filter"] == ['instance="we\\"ird\\\\node"', 'severity=~"page|warning"']
    assert q["receiver"] == ["memhp.*"]


def test_url_path_prefix_is_kept():
    assert (
        settings(url="https://am.example/prefix/").alerts_url().startswith("https://am.example/prefix/api/v2/alerts?")
    )


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"node_name": ""}, "node"),
        ({"url": "ftp://x"}, "http"),
        ({"url": "127.0.0.1:9093"}, "http"),
        ({"node_label": ""}, "node-label"),
        ({"interval": 0}, "positive"),
        ({"bearer_token_file": "/a", "basic_auth_file": "/b"}, "not both"),
        ({"ca_file": "/ca.crt"}, "https"),
    ],
)
def test_unusable_settings_refused(kw, match):
    with pytest.raises(PullConfigError, match=match):
        settings(**kw).validate()


def test_flags(monkeypatch, tmp_path):
    monkeypatch.setenv("NODE_NAME", "node-from-env")
    parser = argparse.ArgumentParser()
    add_pull_arguments(parser)
    assert pull_settings_from_args(parser.parse_args([])) is None  # pull mode off
    s = pull_settings_from_args(
        parser.parse_args(
            [
                "--alertmanager.url",
                "http://127.0.0.1:9093",
                "--alertmanager.poll-interval",
                "15s",
                "--alertmanager.timeout",
                "500ms",
                "--alertmanager.filter",
                'team="mem"',
                "--alertmanager.filter",
                'a="b"',
            ]
        )
    )
    assert s == PullSettings(
        url="http://127.0.0.1:9093",
        node_name="node-from-env",
        interval=15.0,
        timeout=0.5,
        extra_filters=('team="mem"', 'a="b"'),
    )
    s = pull_settings_from_args(
        parser.parse_args(
            [
                "--alertmanager.url",
                "http://x",
                "--alertmanager.node-name",
                "n7",
                "--alertmanager.node-label",
                "instance",
            ]
        )
    )
    assert (s.node_name, s.node_label) == ("n7", "instance")
    monkeypatch.delenv("NODE_NAME")
    parser = argparse.ArgumentParser()
    add_pull_arguments(parser)
    with pytest.raises(PullConfigError, match="NODE_NAME"):
        pull_settings_from_args(parser.parse_args(["--alertmanager.url", "http://x"]))


class Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every GET with ``answer`` (status, headers, body); records the request headers."""

    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"[]")
    seen: list

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def recorder():
    """``start(answer=...) -> (url, seen)``: a real HTTP server on loopback."""
    servers = []

    def start(answer=Recorder.answer):
        seen: list = []
        handler = type("Handler", (Recorder,), {"answer": answer, "seen": seen})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", seen

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_credentials_sent_from_files(tmp_path, recorder):
    url, seen = recorder()
    tok = tmp_path / "tok"
    tok.write_text("pull-token\n")
    src = PullSource(settings(url=url, bearer_token_file=str(tok)), RecordingSink(), ControllerMetrics())
    assert src.poll_once().result == P_SUCCESS
    basic = tmp_path / "basic"
    basic.write_text("memhp:pw:x\n")
    src = PullSource(settings(url=url, basic_auth_file=str(basic)), RecordingSink(), ControllerMetrics())
    assert src.poll_once().result == P_SUCCESS
    assert [h["Authorization"] for h in seen] == [
        "Bearer pull-token",
        "Basic " + base64.b64encode(b"memhp:pw:x").decode(),
    ]
    with pytest.raises(PullConfigError):
        PullSource(settings(bearer_token_file=str(tmp_path / "missing")), RecordingSink(), ControllerMetrics())


def test_a_redirect_is_an_error_and_the_credentials_stay(tmp_path, recorder):
    elsewhere, seen_elsewhere = recorder()
    url, seen = recorder(answer=(302, {"Location": elsewhere + "/api/v2/alerts"}, b""))
    tok = tmp_path / "tok"
    tok.write_text("pull-token\n")
    src = PullSource(settings(url=url, bearer_token_file=str(tok)), RecordingSink(), ControllerMetrics())
    result = src.poll_once()
    assert (result.result, result.error) == (P_ERROR, "HTTP 302")
    assert len(seen) == 1 and not seen_elsewhere


GOOD = {
    "labels": {"alertname": "A", "instance": "n1"},
    "annotations": {},
    "startsAt": "2024-05-01T10:00:00.123Z",
    "endsAt": "2024-05-01T10:05:00.123Z",
    "fingerprint": "76cc461e732fca71",
    "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
    "receivers": [{"name": "memhp"}],
    "updatedAt": "2024-05-01T10:00:00.123Z",
    "generatorURL": "http://prom",
}


def test_alert_conversion_and_defence_in_depth():
    src = PullSource(settings(), RecordingSink(), ControllerMetrics())
    a = src._to_alert(GOOD)
    assert (a.name, a.status, a.source, a.occurrence) == (
        "A",
        "firing",
        "pull",
        ("76cc461e732fca71", "2024-05-01T10:00:00.123Z"),
    )
    # What the query should already have excluded is skipped, never submitted.
    assert src._to_alert({**GOOD, "status": {"state": "suppressed", "silencedBy": ["x"], "inhibitedBy": []}}) is None
    assert src._to_alert({**GOOD, "status": {"state": "active", "silencedBy": [], "inhibitedBy": ["y"]}}) is None
    assert src._to_alert({**GOOD, "labels": {"alertname": "A", "instance": "n2"}}) is None
    # No fingerprint: stamped like Alertmanager's.
    assert src._to_alert({k: v for k, v in GOOD.items() if k != "fingerprint"}).fingerprint == "76cc461e732fca71"


@pytest.mark.parametrize(
    "bad",
    [
        "x",
        {**GOOD, "labels": {"instance": "n1"}},
        {**GOOD, "labels": {"alertname": "A", "instance": 1}},
        {**GOOD, "startsAt": "soon"},
        {**GOOD, "status": "active"},
        {**GOOD, "fingerprint": 12},
    ],
)
def test_malformed_alerts_make_the_whole_answer_bad(bad):
    src = PullSource(settings(), RecordingSink(), ControllerMetrics())
    with pytest.raises(_BadResponse):
        src._to_alert(bad)
