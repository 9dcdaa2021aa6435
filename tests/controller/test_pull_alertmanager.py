"""Pull mode against the real Alertmanager: filters, silences, inhibitions, reconciliation, failures."""

from __future__ import annotations

import threading

import pytest

from memhp.controller.alert import FIRING, RESOLVED
from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.common import canonical_time
from memhp.controller.sources.pull import RESOLVED_BY_ANNOTATION, PullSettings, PullSource
from memhp.controller.sources.webhook import WebhookSettings, serve
from tests.helpers.alertmanager import (
    alertmanager_config,
    api_alert,
    bcrypt_hash,
    requires_alertmanager,
    resolved,
    webhook_receiver,
)
from tests.helpers.sink import RecordingSink
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port, wait_until

pytestmark = [pytest.mark.prometheus, requires_alertmanager]


def polls(metrics: ControllerMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("memhp_controller_alertmanager_polls_total", {"result": result}) or 0.0


def source(url: str, node: str = "n1", **kw) -> tuple[PullSource, RecordingSink, ControllerMetrics]:
    sink, metrics = RecordingSink(), ControllerMetrics()
    settings = PullSettings(
        url=url, node_name=node, interval=kw.pop("interval", 0.05), timeout=kw.pop("timeout", 5), **kw
    )
    return PullSource(settings, sink, metrics), sink, metrics


def names(batch):
    return sorted((a.name, a.status) for a in batch)


def test_only_this_nodes_alerts_are_submitted_with_alertmanagers_identity(alertmanager):
    am = alertmanager(alertmanager_config())
    odd = 'we"ird\\node'
    am.post_alerts(
        [
            api_alert("MemoryBlocksOffline", {"instance": "n1"}, annotations={"summary": "s"}),
            api_alert("MemoryBlocksOffline", {"instance": "n2"}),
            api_alert("ZoneKernelLow", {"instance": "n10"}),
            api_alert("ZoneKernelLow", {"instance": odd}),
            api_alert("NoNodeLabel"),
        ]
    )
    in_am = am.wait_for_alerts(lambda a: len(a) == 5)
    src, sink, metrics = source(am.url)
    result = src.poll_once()
    assert (result.result, result.firing, result.resolved) == ("success", 1, 0)
    (a,) = sink.alerts
    mine = next(x for x in in_am if x["labels"].get("instance") == "n1")
    assert (a.name, a.status, a.source) == ("MemoryBlocksOffline", FIRING, "pull")
    assert a.labels == {"alertname": "MemoryBlocksOffline", "instance": "n1"} and a.annotations == {"summary": "s"}
    assert a.occurrence == (mine["fingerprint"], canonical_time(mine["startsAt"]))
    assert polls(metrics, "success") == 1
    assert (
        metrics.registry.get_sample_value("memhp_controller_alertmanager_last_poll_success_timestamp_seconds") > 1.7e9
    )
    # A node name that needs escaping in the matcher still selects exactly its alert.
    src_odd, sink_odd, _ = source(am.url, node=odd)
    assert src_odd.poll_once().firing == 1
    assert [x.labels["instance"] for x in sink_odd.alerts] == [odd]


def test_level_triggered_repeats_and_one_synthesised_resolution(alertmanager):
    am = alertmanager(alertmanager_config())
    sent = api_alert("MemoryBlocksOffline", {"instance": "n1"})
    am.post_alerts([sent, api_alert("ZoneKernelLow", {"instance": "n1"})])
    am.wait_for_alerts(lambda a: len(a) == 2)
    src, sink, metrics = source(am.url)
    src.poll_once()
    src.poll_once()
    assert len(sink.batches) == 2
    assert sink.batches[0] == sink.batches[1]  # the same occurrences, resubmitted: the engine dedups
    occurrence = next(a.occurrence for a in sink.batches[0] if a.name == "MemoryBlocksOffline")

    am.post_alerts([resolved(sent)])
    am.wait_for_alerts(lambda a: len(a) == 1, desc="the alert resolved in Alertmanager")
    result = src.poll_once()
    assert (result.firing, result.resolved) == (1, 1)
    gone = [a for a in sink.batches[2] if a.status == RESOLVED]
    assert [(a.name, a.occurrence) for a in gone] == [("MemoryBlocksOffline", occurrence)]
    assert gone[0].ends_at and gone[0].annotations[RESOLVED_BY_ANNOTATION] == "pull"
    src.poll_once()
    assert names(sink.batches[3]) == [("ZoneKernelLow", FIRING)]  # resolved once, not again
    get = metrics.registry.get_sample_value
    assert get("memhp_controller_alerts_received_total", {"source": "pull", "status": "resolved"}) == 1
    assert polls(metrics, "success") == 4


def test_silenced_alerts_are_not_submitted(alertmanager):
    am = alertmanager(alertmanager_config())
    am.post_alerts(
        [api_alert("MemoryBlocksOffline", {"instance": "n1"}), api_alert("ZoneKernelLow", {"instance": "n1"})]
    )
    am.wait_for_alerts(lambda a: len(a) == 2)
    src, sink, _ = source(am.url)
    assert src.poll_once().firing == 2

    am.add_silence('alertname="MemoryBlocksOffline"', 'instance="n1"')
    am.post_alerts([api_alert("SilencedFromTheStart", {"instance": "n1"})])
    am.add_silence('alertname="SilencedFromTheStart"')
    am.wait_for_alerts(
        lambda a: {x["labels"]["alertname"] for x in a} == {"ZoneKernelLow"},
        desc="only the unsilenced alert left",
        silenced="false",
    )
    assert len(am.alerts()) == 3  # all still active in Alertmanager, two of them silenced
    src.poll_once()
    assert names(sink.batches[-1]) == [("MemoryBlocksOffline", RESOLVED), ("ZoneKernelLow", FIRING)]
    src.poll_once()
    assert names(sink.batches[-1]) == [("ZoneKernelLow", FIRING)]
    assert "SilencedFromTheStart" not in {a.name for a in sink.alerts}


def test_inhibited_alerts_are_not_submitted(alertmanager):
    config = alertmanager_config(
        inhibit_rules=[
            {
                "source_matchers": ['alertname="MemhpNodeDraining"'],
                "target_matchers": ['alertname="MemhpMovableIdle"'],
                "equal": ["instance"],
            }
        ]
    )
    am = alertmanager(config)
    am.post_alerts(
        [
            api_alert("MemhpMovableIdle", {"instance": "n1"}),
            api_alert("MemhpMovableIdle", {"instance": "n2"}),
            api_alert("MemhpNodeDraining", {"instance": "n1"}),
        ]
    )
    am.wait_for_alerts(lambda a: len(a) == 2, desc="n1's MovableIdle inhibited", inhibited="false")
    src1, sink1, _ = source(am.url, node="n1")
    src2, sink2, _ = source(am.url, node="n2")
    src1.poll_once()
    src2.poll_once()
    assert names(sink1.alerts) == [("MemhpNodeDraining", FIRING)]
    assert names(sink2.alerts) == [("MemhpMovableIdle", FIRING)]  # not inhibited there: no draining on n2


def test_refused_submission_changes_nothing_and_is_retried(alertmanager):
    am = alertmanager(alertmanager_config())
    sent = api_alert("MemoryBlocksOffline", {"instance": "n1"})
    am.post_alerts([sent])
    am.wait_for_alerts(lambda a: len(a) == 1)
    src, sink, metrics = source(am.url)
    src.poll_once()
    am.post_alerts([resolved(sent)])
    am.wait_for_alerts(lambda a: a == [], desc="resolved in Alertmanager")
    sink.full = True
    assert src.poll_once().result == "sink_full"
    sink.full, sink.unavailable = False, True
    assert src.poll_once().result == "sink_unavailable"
    sink.unavailable = False
    result = src.poll_once()
    assert (result.result, result.resolved) == ("success", 1)  # the resolution was not lost
    assert names(sink.batches[-1]) == [("MemoryBlocksOffline", RESOLVED)]
    assert polls(metrics, "sink_full") == polls(metrics, "sink_unavailable") == 1


def test_alertmanager_down_is_counted_and_the_loop_goes_on(alertmanager):
    port = free_port()
    src, sink, metrics = source(f"http://127.0.0.1:{port}", interval=0.05, timeout=1)
    stop = threading.Event()
    thread = threading.Thread(target=src.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: polls(metrics, "error") >= 3, timeout=10, desc="failed polls counted")
        assert sink.batches == [] and thread.is_alive()
        am = alertmanager(alertmanager_config(), port=port)
        am.post_alerts([api_alert("MemoryBlocksOffline", {"instance": "n1"})])
        sink.wait_for(
            lambda alerts: [a for a in alerts if a.name == "MemoryBlocksOffline"],
            desc="the loop recovering once Alertmanager is up",
        )
        assert polls(metrics, "success") >= 1
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_webhook_and_pull_see_the_same_occurrence(alertmanager, tmp_path):
    token = tmp_path / "token"
    token.write_text("tok\n")
    hook_sink, hook_metrics = RecordingSink(), ControllerMetrics()
    handle = serve(WebhookSettings(listen_address="127.0.0.1:0", bearer_token_file=str(token)), hook_sink, hook_metrics)
    try:
        am = alertmanager(alertmanager_config(webhook_receiver("memhp", handle.webhook_url, bearer_token_file=token)))
        am.post_alerts([api_alert("MemoryBlocksOffline", {"instance": "n1"})])
        (pushed,) = hook_sink.wait_for(lambda alerts: alerts[:1], desc="webhook delivery")
        src, pull_sink, _ = source(am.url)
        src.poll_once()
        (pulled,) = pull_sink.alerts
        assert pulled.occurrence == pushed.occurrence
        assert (pulled.source, pushed.source) == ("pull", "webhook")
    finally:
        handle.shutdown()


def test_tls_and_basic_auth_to_alertmanager(alertmanager, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    web_config = {
        "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
        "basic_auth_users": {"memhp": bcrypt_hash("pull-secret")},
    }
    am = alertmanager(alertmanager_config(), web_config=web_config, ca_file=cert, basic_auth=("memhp", "pull-secret"))
    assert am.url.startswith("https://")
    am.post_alerts([api_alert("MemoryBlocksOffline", {"instance": "n1"})])
    good = tmp_path / "good"
    good.write_text("memhp:pull-secret\n")
    bad = tmp_path / "bad"
    bad.write_text("memhp:wrong\n")

    src, sink, _ = source(am.url, basic_auth_file=str(good), ca_file=str(cert))
    assert src.poll_once().result == "success" and len(sink.alerts) == 1
    src, sink, metrics = source(am.url, basic_auth_file=str(bad), ca_file=str(cert))
    result = src.poll_once()
    assert (result.result, result.error) == ("error", "HTTP 401") and sink.batches == []
    src, sink, _ = source(am.url, basic_auth_file=str(good))  # system CAs do not trust the test cert
    result = src.poll_once()
    assert result.result == "error" and "CERTIFICATE_VERIFY_FAILED" in result.error
