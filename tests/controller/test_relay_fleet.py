"""The fleet path at scale: real Alertmanager -> two real relay processes -> node controllers.

2,000 instances here (10,000 with ``python -m bench.relay_fanout --instances
10000``): 20 of them are real ``memhp-controller`` processes on fixture
trees, the rest reach one counting receiver by path.  One relay replica is
killed with SIGKILL mid-burst; Alertmanager's retries must make up for it.
"""

from __future__ import annotations

import pytest

from bench.relay_fanout import run_fleet
from tests.helpers.alertmanager import _require_alertmanager

pytestmark = [pytest.mark.prometheus]

INSTANCES = 2000
CONTROLLERS = 20


def test_every_alert_reaches_its_node_once_in_effect_despite_a_killed_relay(tmp_path, capsys):
    _require_alertmanager()
    res = run_fleet(tmp_path / "fleet", INSTANCES, CONTROLLERS, kill_relay=True)
    with capsys.disabled():  # Alertmanager's CPU and the relay's latency, in the test log
        print("\n" + res.report())

    assert res.killed_relay
    # Every fake node's alert, firing and then resolved, reached the counting receiver at its own path.
    assert res.sink_fingerprints["firing"] == res.fake_fingerprints
    assert res.sink_fingerprints["resolved"] == res.fake_fingerprints
    assert len(res.fake_fingerprints) == INSTANCES - CONTROLLERS
    # Each real controller acted exactly once on its firing occurrence and once on its resolution:
    # re-deliveries (Alertmanager's retries after the kill) changed nothing.
    for name, (fingerprint, starts_at) in res.expected.items():
        actions = res.controller_actions[name]
        assert actions == {
            ("fleet-firing", fingerprint, starts_at, False): 1,
            ("fleet-resolved", fingerprint, starts_at, True): 1,
        }, name
        assert res.controller_online_after_firing[name] == 7, name  # 8 blocks online, one offlined
        assert res.controller_online_after_resolve[name] == 6, name
    assert len(res.expected) == CONTROLLERS
    # One notification per node and status, at least; Alertmanager never polled.
    assert res.am_notifications >= 2 * INSTANCES
    assert res.am_get_requests < 10
    assert res.relay_unresolvable == 0
