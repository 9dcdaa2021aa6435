"""The fleet budget on a real etcd (Debian's etcd-server, v3 JSON gateway)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from hypothesis import HealthCheck, settings

from memhp.controller.alert import Alert
from memhp.controller.config import EtcdConfig
from memhp.controller.fleet.budget import Budget, BudgetFull, BudgetUnavailable, scopes
from memhp.controller.fleet.etcd import EtcdStore
from tests.helpers.controller import journal
from tests.helpers.etcd import new_etcd

from .budget_machine import TTL, BudgetMachine

pytestmark = [pytest.mark.etcd]

_runs = itertools.count()


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory):
    server = new_etcd(tmp_path_factory.mktemp("etcd")).start()
    yield server
    server.stop()


def test_budget_never_lets_more_than_n_hold_on_a_real_etcd(shared_etcd):
    class EtcdBudgetMachine(BudgetMachine):
        def make_store(self):
            self.prefix = f"/memhp-test/{next(_runs)}/"  # a fresh key space per example
            return EtcdStore(EtcdConfig(endpoints=(shared_etcd.url,), timeout=10))

    EtcdBudgetMachine.TestCase.settings = settings(
        max_examples=8, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
    )
    EtcdBudgetMachine.TestCase().runTest()


def test_a_killed_holders_slot_frees_within_the_lease_ttl(etcd):
    store = EtcdStore(EtcdConfig(endpoints=(etcd.url,)))
    wanted = scopes("/b/", "r", 1, None)
    a = Budget(store, TTL)
    a.try_acquire(wanted)  # a is then "killed": nobody keeps its lease alive
    with pytest.raises(BudgetFull):
        Budget(store, TTL).try_acquire(wanted)
    t0 = time.monotonic()
    held = Budget(store, TTL).acquire(wanted, wait=3 * TTL, stop=threading.Event(), poll=0.2)
    freed = time.monotonic() - t0
    assert freed <= TTL + 2.0, freed  # etcd checks expiry about every 500ms
    assert etcd.count("/b/concurrent/all/") == 1
    Budget(store, TTL).release(held)
    assert etcd.count("/b/concurrent/all/") == 0


def test_a_held_slot_is_kept_alive_past_its_ttl_and_released_after(etcd):
    store = EtcdStore(EtcdConfig(endpoints=(etcd.url,)))
    wanted = scopes("/k/", "r", 1, 10)
    budget = Budget(store, TTL)
    held = budget.try_acquire(wanted)
    budget.keep(held)
    time.sleep(TTL * 1.6)
    assert not held.lost.is_set()
    with pytest.raises(BudgetFull):
        Budget(store, TTL).try_acquire(wanted)
    budget.release(held)
    assert etcd.count("/k/concurrent/") == 0
    assert etcd.count("/k/hourly/all/") == 1  # the hour's count stays


def test_an_unreachable_etcd_is_budget_unavailable(tmp_path):
    server = new_etcd(tmp_path / "never-started")  # ports chosen, nothing listening
    store = EtcdStore(EtcdConfig(endpoints=(server.url,), timeout=1))
    with pytest.raises(BudgetUnavailable, match="unreachable"):
        Budget(store, TTL).try_acquire(scopes("/u/", "r", 1, None))


RULES = """\
- name: shrink
  alertname: MemoryPressure
  action: offline
  count: 1
  zone: movable
"""


def _fleet(url: str, wait: str = "2s") -> dict:
    return {
        "host": "node-a",
        "budget": {"etcd": {"endpoints": [url], "timeout": "1s"}, "lease_ttl": "5s", "max_concurrent": 1, "wait": wait},
    }


def alert(fp: str) -> Alert:
    return Alert("MemoryPressure", "firing", {"alertname": "MemoryPressure"}, fingerprint=fp, starts_at="2024-01-01")


def test_the_controller_takes_a_slot_around_its_action_and_journals_it(tree, etcd, fleet_engine):
    e = fleet_engine(RULES, _fleet(etcd.url))
    out = e.handle(alert("f1"))
    assert out.status == "done"
    types = [r.type for r in journal(e)]
    # acquired before the action starts, released after it ends
    assert types.index("budget") < types.index("action_start") < types.index("action_end")
    acquired, released = journal(e, "budget")
    assert (acquired.event, released.event) == ("acquired", "release")
    assert acquired.slots == released.slots and acquired.action_id == out.action_id
    assert etcd.count("/memhp/budget/concurrent/") == 0
    assert e.metrics.registry.get_sample_value("memhp_controller_budget_requests_total", {"result": "acquired"}) == 1


def test_a_full_budget_refuses_after_the_wait(tree, etcd, fleet_engine):
    other = Budget(EtcdStore(EtcdConfig(endpoints=(etcd.url,))), 30)
    other.try_acquire(scopes("/memhp/budget/", "shrink", 1, None))
    e = fleet_engine(RULES, _fleet(etcd.url, wait="1s"))
    out = e.handle(alert("f1"))
    assert (out.status, out.guard) == ("refused", "budget")
    (r,) = journal(e, "refusal")
    assert r.guard == "budget" and "1 of 1 held" in r.detail
    assert not journal(e, "action_start")
    assert e.metrics.registry.get_sample_value("memhp_controller_budget_requests_total", {"result": "full"}) == 1


def test_etcd_down_fails_closed_journalled_and_counted(tree, etcd, fleet_engine):
    e = fleet_engine(RULES, _fleet(etcd.url, wait="2s"))
    etcd.kill()
    out = e.handle(alert("f1"))
    assert (out.status, out.guard) == ("refused", "budget_unavailable")
    assert [tree.state(i) for i in range(8, 12)] == ["online"] * 4
    (r,) = journal(e, "refusal")
    assert r.guard == "budget_unavailable" and "unreachable" in r.detail
    m = e.metrics.registry.get_sample_value
    assert m("memhp_controller_guard_refusals_total", {"guard": "budget_unavailable"}) == 1
    assert m("memhp_controller_budget_requests_total", {"result": "unavailable"}) == 1
    assert m("memhp_controller_budget_errors_total") >= 1
    etcd.start()  # back: the next occurrence acts
    assert e.handle(alert("f2")).status == "done"


def test_missing_tls_files_refuse_and_do_not_stop_the_controller(tree, tmp_path, fleet_engine):
    fleet = _fleet("https://127.0.0.1:1", wait="0s")
    fleet["budget"]["etcd"]["ca_file"] = str(tmp_path / "no-such-ca.pem")
    e = fleet_engine(RULES, fleet)
    out = e.handle(alert("f1"))
    assert (out.status, out.guard) == ("refused", "budget_unavailable")
    (r,) = journal(e, "refusal")
    assert "TLS files" in r.detail
