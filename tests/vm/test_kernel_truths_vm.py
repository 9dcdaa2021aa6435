"""Issue 21 §3 and §6 against Debian's kernel, one guest boot for all of it:

1. a freshly booted, healthy guest (x86: block 0 spans ZONE_DMA, ZONE_DMA32
   and holes, so its valid_zones is none) gives no block worth a look, no
   alert condition and no report finding, while the metric still counts
   block 0 as boot DMA memory;
2. a hot-added DIMM whose block cannot be offlined (a memory notifier
   refuses MEM_GOING_OFFLINE) gives all three, with the counters equal to the
   kernel's own "memory offlining ... failed" lines;
3. once that block goes offline (successfully) and online again it is no
   longer failing; the counters keep counting;
4. failed onlines (the notifier refuses MEM_GOING_ONLINE) are counted as the
   kernel's "online_pages ... failed" lines, and MemhpOnlineFailures' condition
   holds.

Alert conditions are the committed rule files' expressions, evaluated by a
real Prometheus on the host that scrapes the exporter in the guest; findings
are `memhp report`'s against that Prometheus.  The steps run in file order
and share the guest, the exporter and Prometheus.
"""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.prometheus import prometheus_binary, start_prometheus, static_job

from .guest import Guest, VMConfig
from .test_exporter_vm import Exporter, total, value

pytestmark = [pytest.mark.vm, pytest.mark.prometheus]

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = [REPO / "alerts" / "memhp.rules.yaml", REPO / "alerts" / "memhp.alerts.yaml"]
INSTANCE = "memhp-guest"
SLOW = 300  # seconds: TCG, and other suites share the two cores
OFFLINE_LINE = re.compile(r"memory offlining \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] failed due to notifier failure")
ONLINE_LINE = re.compile(r"online_pages \[mem 0x[0-9a-f]+-0x[0-9a-f]+\] failed")
OFFLINE_TRIES = 3  # MemhpOfflineFailuresRising wants more than 2 of one reason
ONLINE_TRIES = 2


def alert_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULE_FILES[1].read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


@pytest.fixture(scope="module")
def guest(vm_guest_factory) -> Guest:
    if prometheus_binary() is None:
        pytest.fail("prometheus not installed (scripts/setup.sh installs it)", pytrace=False)
    return vm_guest_factory(VMConfig(), fresh=True)  # freshly booted, and this module hot-adds


@pytest.fixture(scope="module")
def exporter(guest):
    assert guest.dynamic_debug() == 0  # the failure lines are pr_debug
    e = Exporter(guest, args=())  # the defaults: one by one only the blocks worth a look
    yield e
    guest.kill(e.pid)


@pytest.fixture(scope="module")
def prom(exporter, guest, tmp_path_factory):
    job = static_job("memhp", [f"127.0.0.1:{guest.forward(exporter.port)}"], instance=INSTANCE)
    server = start_prometheus(
        tmp_path_factory.mktemp("prometheus"), [job], RULE_FILES, scrape_interval="3s", evaluation_interval="2s"
    )
    yield server
    server.stop()


def worth_a_look(m) -> set[int]:
    return {int(dict(labels)["block"]) for (name, labels) in m if name == "memhp_block_info"}


def conditions(prom, names=None) -> dict[str, list]:
    """Each alert's expression, evaluated now: the alerts whose condition holds."""
    out = {}
    for name, expr in alert_exprs().items():
        if names is None or name in names:
            result = prom.query(expr)
            if result:
                out[name] = result
    return out


def wait_prom(prom, expr: str, want: float, what: str) -> None:
    def seen():
        r = prom.query(expr)
        return r and float(r[0]["value"][1]) == want

    prom.wait_for(seen, timeout=SLOW, what=what)


def report(prom, tmp_path) -> dict:
    out = tmp_path / "report"
    r = subprocess.run(
        # --end: without it the end is rounded down to the step, before what just happened
        [
            sys.executable,
            "-m",
            "memhp.cli",
            "report",
            "--prometheus",
            prom.url,
            "--range",
            "10m",
            "--end",
            f"{time.time():.3f}",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=SLOW,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((out / "report.json").read_text())
    # the report saw the guest: "no finding" is not "no data"
    assert [(n["instance"], n["node"]) for n in doc["nodes"]] == [(INSTANCE, "0")], doc["nodes"]
    assert doc["nodes"][0]["online_bytes"], doc["nodes"][0]
    return doc


def findings(doc: dict) -> dict[str, dict]:
    return {g["kind"]: g for g in doc["findings"]}


def test_healthy_guest_no_block_worth_a_look_no_alert_no_finding(guest, exporter, prom, tmp_path):
    assert guest.valid_zones(0) == "none"  # DMA, DMA32 and the BIOS holes
    m = exporter.scrape()
    assert value(m, "memhp_blocks_unofflinable", node="0", reason="boot_dma") == 1
    assert value(m, "memhp_blocks_unofflinable", node="0", reason="other") == 0
    assert worth_a_look(m) == set()
    assert value(m, "memhp_block_series_exported") == 0
    prom.wait_scraped(timeout=SLOW, scrapes=3)
    prom.wait_rules_evaluated(timeout=SLOW)
    assert conditions(prom) == {}
    assert findings(report(prom, tmp_path)) == {}


@pytest.fixture(scope="module")
def dimm(guest, exporter):
    id = guest.hotplug_dimm("512M")
    blocks = guest.dimm_blocks(id)
    for b in blocks:
        assert guest.set_state(b, "online_movable") == 0
    yield blocks
    guest.inject_notifier_error("MEM_GOING_OFFLINE", 0)
    guest.inject_notifier_error("MEM_GOING_ONLINE", 0)
    for b in blocks:
        guest.set_state(b, "offline")
    guest.unplug(id)


def test_dimm_block_that_cannot_be_offlined_gives_all_three(guest, exporter, prom, dimm, tmp_path):
    victim = dimm[-1]
    assert guest.inject_notifier_error("MEM_GOING_OFFLINE", -errno.EBUSY) == 0
    try:
        for _ in range(OFFLINE_TRIES):
            assert guest.set_state(victim, "offline") == errno.EBUSY
    finally:
        assert guest.inject_notifier_error("MEM_GOING_OFFLINE", 0) == 0
    assert guest.block_state(victim) == "online"
    kernel_says = len(OFFLINE_LINE.findall(guest.kmsg()))
    assert kernel_says == OFFLINE_TRIES
    m = exporter.wait(
        lambda m: total(m, "memhp_offline_failures_total", reason="notifier failure") == kernel_says,
        "the exporter to count the kernel's offline failures",
        timeout=SLOW,
    )
    assert value(m, "memhp_block_offline_failures_total", block=str(victim), reason="notifier failure") == kernel_says
    assert worth_a_look(m) == {victim}
    wait_prom(
        prom, 'sum(memhp_offline_failures_total{reason="notifier failure"})', kernel_says, "Prometheus to see them"
    )
    prom.wait_rules_evaluated(timeout=SLOW)
    assert "MemhpOfflineFailuresRising" in conditions(prom, {"MemhpOfflineFailuresRising"})
    got = findings(report(prom, tmp_path))
    assert "failed_offline" in got, got
    assert got["failed_offline"]["count"] == 1
    assert "unofflinable" not in got  # boot DMA memory still is no finding


def test_failing_flag_clears_after_a_successful_offline(guest, exporter, dimm):
    victim = dimm[-1]
    assert guest.set_state(victim, "offline") == 0
    assert guest.set_state(victim, "online_movable") == 0
    m = exporter.wait(
        lambda m: value(m, "memhp_uevents_total", action="online") and victim not in worth_a_look(m),
        "the block to stop failing once it went offline",
        timeout=SLOW,
    )
    # offline and back online: no longer worth a look, and the counters keep their count
    assert value(m, "memhp_block_state", block=str(victim), node="0", state="online") is None
    assert total(m, "memhp_offline_failures_total", reason="notifier failure") == OFFLINE_TRIES
    assert value(m, "memhp_block_offline_failures_total", block=str(victim), reason="notifier failure") == OFFLINE_TRIES


def test_failed_onlines_are_counted_as_the_kernel_logs_them(guest, exporter, prom, dimm):
    victim = dimm[0]
    assert guest.set_state(victim, "offline") == 0
    assert guest.inject_notifier_error("MEM_GOING_ONLINE", -errno.EBUSY) == 0
    try:
        for _ in range(ONLINE_TRIES):
            assert guest.set_state(victim, "online_movable") == errno.EBUSY
    finally:
        assert guest.inject_notifier_error("MEM_GOING_ONLINE", 0) == 0
    assert guest.block_state(victim) == "offline"  # the kernel does not retry
    log = guest.kmsg()
    assert len(ONLINE_LINE.findall(log)) == ONLINE_TRIES
    m = exporter.wait(
        lambda m: value(m, "memhp_online_failures_total") == ONLINE_TRIES,
        "the exporter to count the kernel's online failures",
        timeout=SLOW,
    )
    assert value(m, "memhp_block_online_failures_total", block=str(victim)) == ONLINE_TRIES
    assert (value(m, "memhp_online_failure_last_timestamp_seconds") or 0) > time.time() - SLOW
    # an online failure is not an offline failure
    assert total(m, "memhp_offline_failures_total") == len(OFFLINE_LINE.findall(log)) == OFFLINE_TRIES
    wait_prom(prom, "sum(memhp_online_failures_total)", ONLINE_TRIES, "Prometheus to see them")
    prom.wait_rules_evaluated(timeout=SLOW)
    assert "MemhpOnlineFailures" in conditions(prom, {"MemhpOnlineFailures"})
    assert guest.set_state(victim, "online_movable") == 0
