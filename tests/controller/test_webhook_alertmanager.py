"""The real Alertmanager (Debian package) delivering to the webhook receiver on loopback.

Alerts go into Alertmanager through its API; Alertmanager itself routes,
groups and notifies the receiver with credentials read from files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from memhp.controller.alert import FIRING, RESOLVED
from memhp.controller.sources.common import canonical_time
from tests.helpers.alertmanager import (
    alertmanager_config,
    api_alert,
    check_config,
    requires_alertmanager,
    resolved,
    webhook_receiver,
)
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import wait_until
from tests.helpers.web import rejected, secret_file

pytestmark = [pytest.mark.prometheus, requires_alertmanager]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "alertmanager-memhp.yml"


def named(name, status=None):
    return lambda alerts: [a for a in alerts if a.name == name and (status is None or a.status == status)]


def test_firing_then_resolved_delivered_with_alertmanagers_identity(receiver, alertmanager):
    r = receiver()
    am = alertmanager(
        alertmanager_config(webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file))
    )
    sent = api_alert(
        "MemoryBlocksOffline", {"node": "n1", "severity": "warning"}, annotations={"summary": "4 blocks offline"}
    )
    am.post_alerts([sent])
    (firing,) = r.sink.wait_for(named("MemoryBlocksOffline", FIRING), desc="firing delivery")[:1]
    in_am = am.alerts()[0]
    assert firing.fingerprint == in_am["fingerprint"]
    assert firing.starts_at == canonical_time(in_am["startsAt"])
    assert firing.labels == {"alertname": "MemoryBlocksOffline", "node": "n1", "severity": "warning"}
    assert firing.annotations == {"summary": "4 blocks offline"}
    assert firing.source == "webhook" and firing.ends_at is None

    am.post_alerts([resolved(sent)])
    (ended,) = r.sink.wait_for(named("MemoryBlocksOffline", RESOLVED), desc="resolved delivery")[:1]
    assert ended.occurrence == firing.occurrence  # the same episode, now over
    assert ended.ends_at is not None and ended.ends_at >= ended.starts_at
    get = r.metrics.registry.get_sample_value
    assert get("memhp_controller_alerts_received_total", {"source": "webhook", "status": "resolved"}) >= 1
    assert rejected(r.metrics, "auth_missing") == rejected(r.metrics, "auth_failed") == 0


def test_a_group_mixing_firing_and_resolved_keeps_each_status(receiver, alertmanager):
    r = receiver()
    am = alertmanager(
        alertmanager_config(
            webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file), group_by=["node"]
        )
    )
    idle = api_alert("MovableIdle", {"node": "n1"})
    am.post_alerts([api_alert("ZoneKernelLow", {"node": "n1"}), idle])
    r.sink.wait_for(
        lambda alerts: {a.name for a in alerts} == {"ZoneKernelLow", "MovableIdle"}, desc="both alerts firing"
    )
    am.post_alerts([resolved(idle)])

    def mixed_batch(_alerts):
        for batch in list(r.sink.batches):
            statuses = {a.name: a.status for a in batch}
            if statuses == {"ZoneKernelLow": FIRING, "MovableIdle": RESOLVED}:
                return batch
        return None

    r.sink.wait_for(mixed_batch, desc="one notification with one firing and one resolved alert")


def test_repeats_reach_the_sink_with_the_same_occurrence(receiver, alertmanager):
    r = receiver()
    am = alertmanager(
        alertmanager_config(
            webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file),
            group_interval="500ms",
            repeat_interval="1s",
        )
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
    r.sink.wait_for(
        lambda a: len(named("MemoryBlocksOffline", FIRING)(a)) >= 3,
        timeout=20,
        desc="three deliveries (first + two repeats)",
    )
    deliveries = named("MemoryBlocksOffline")(r.sink.alerts)
    assert all(a.status == FIRING for a in deliveries)
    assert len(r.sink.batches) >= 3  # separate notifications, not one batch
    assert len({a.occurrence for a in deliveries}) == 1


def test_wrong_or_missing_credentials_are_refused(receiver, alertmanager, tmp_path):
    r = receiver()
    wrong = secret_file(tmp_path / "wrong-token", "not-the-token")
    config = alertmanager_config(
        webhook_receiver("wrong-token", r.handle.webhook_url, bearer_token_file=wrong),
        webhook_receiver("no-credentials", r.handle.webhook_url),
        webhook_receiver("wrong-basic", r.handle.webhook_url, basic_auth=("memhp", wrong)),
        routes=[
            {"receiver": "no-credentials", "matchers": ['alertname="B"']},
            {"receiver": "wrong-basic", "matchers": ['alertname="C"']},
        ],
    )
    am = alertmanager(config)
    am.post_alerts([api_alert("A", {"node": "n1"}), api_alert("B", {"node": "n1"}), api_alert("C", {"node": "n1"})])
    wait_until(
        lambda: rejected(r.metrics, "auth_failed") >= 2 and rejected(r.metrics, "auth_missing") >= 1,
        timeout=15,
        desc="Alertmanager's deliveries refused",
    )
    # Alertmanager saw the refusals as failed notifications.
    wait_until(
        lambda: am.metric("alertmanager_notifications_failed_total", integration="webhook") >= 3,
        timeout=15,
        desc="failures counted by Alertmanager",
    )
    assert r.sink.batches == []


def test_basic_auth_from_password_file(receiver, alertmanager, tmp_path):
    basic = secret_file(tmp_path / "basic", "alertmanager:s3cret pass")
    password = secret_file(tmp_path / "password", "s3cret pass")
    r = receiver(bearer_token_file=None, basic_auth_file=str(basic))
    am = alertmanager(
        alertmanager_config(webhook_receiver("memhp", r.handle.webhook_url, basic_auth=("alertmanager", password)))
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
    r.sink.wait_for(named("MemoryBlocksOffline", FIRING), desc="delivery with basic auth")


def test_tls_verified_with_the_ca_file(receiver, alertmanager, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    r = receiver(tls_cert_file=str(cert), tls_key_file=str(key))
    assert r.handle.webhook_url.startswith("https://")
    am = alertmanager(
        alertmanager_config(
            webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file, ca_file=cert)
        )
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
    r.sink.wait_for(named("MemoryBlocksOffline", FIRING), desc="delivery over TLS")


def test_untrusted_certificate_is_not_sent_the_alerts(receiver, alertmanager, tmp_path):
    cert, key = make_self_signed_cert(tmp_path, "server")
    other_ca, _ = make_self_signed_cert(tmp_path, "someone-else")
    r = receiver(tls_cert_file=str(cert), tls_key_file=str(key))
    am = alertmanager(
        alertmanager_config(
            webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file, ca_file=other_ca)
        )
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
    wait_until(lambda: rejected(r.metrics, "tls_handshake") >= 1, timeout=15, desc="handshake refused")
    assert r.sink.batches == []


@pytest.mark.parametrize("state,reason", [("full", "queue_full"), ("unavailable", "sink_unavailable")])
def test_refused_work_is_resent_by_alertmanager(receiver, alertmanager, state, reason):
    r = receiver()
    setattr(r.sink, state, True)
    am = alertmanager(
        alertmanager_config(webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file))
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
    wait_until(lambda: rejected(r.metrics, reason) >= 1, timeout=15, desc=f"a delivery refused with {reason}")
    assert r.sink.batches == []
    setattr(r.sink, state, False)
    r.sink.wait_for(named("MemoryBlocksOffline", FIRING), desc="Alertmanager resending once the sink accepts")


def test_oversized_notification_refused(receiver, alertmanager):
    r = receiver(max_body_bytes=300)
    am = alertmanager(
        alertmanager_config(webhook_receiver("memhp", r.handle.webhook_url, bearer_token_file=r.token_file))
    )
    am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"}, annotations={"description": "x" * 400})])
    wait_until(lambda: rejected(r.metrics, "body_too_large") >= 1, timeout=15, desc="413 for the notification")
    wait_until(
        lambda: am.metric("alertmanager_notifications_failed_total", integration="webhook") >= 1,
        timeout=15,
        desc="Alertmanager counting the failure",
    )
    assert r.sink.batches == []


def test_example_receiver_config_is_valid_and_works(receiver, alertmanager, tmp_path):
    check_config(EXAMPLE)
    r = receiver()
    config = yaml.safe_load(EXAMPLE.read_text())
    # Point the example at this test's receiver and token, and shorten its timers; the rest as shipped.
    for route in config["route"]["routes"]:
        route.update({"group_wait": "200ms", "group_interval": "1s"})
    for rcv in config["receivers"]:
        for wh in rcv.get("webhook_configs", []):
            if "memhp" in rcv["name"]:
                wh["url"] = r.handle.webhook_url
                wh["http_config"]["authorization"]["credentials_file"] = str(r.token_file)
    am = alertmanager(config)
    am.post_alerts([api_alert("MemhpHotAddedMemoryOffline", {"node": "n1", "severity": "warning"})])
    r.sink.wait_for(named("MemhpHotAddedMemoryOffline", FIRING), desc="delivery through the example config")
