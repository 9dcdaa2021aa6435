"""The full loop, everything real (issue 5, "How it is checked"):

    QEMU guest (Debian's kernel, TCG)            host, loopback only
    ---------------------------------            --------------------------------------------
    memhp-exporter  :9100  <---- hostfwd ---- Prometheus (2s scrapes, memhp's rules, the
    memhp-controller :10302 <--- hostfwd ----   blocks-left-offline for: shortened to 6s)
        |  (webhook, bearer token)  <-------- Alertmanager  <--- alerts --- Prometheus
        |  (pull: GET /api/v2/alerts ------->   via 10.0.2.2, QEMU's alias of the host loopback)
        v
    /sys/devices/system/memory/memoryN/state   (the guest's real kernel)

1. a 512M DIMM is ACPI-hot-added; Debian's kernel leaves its 4 blocks offline;
2. Prometheus scrapes the exporter in the guest and fires MemhpBlocksLeftOffline
   (instance="memhp-guest", node="0");
3. webhook mode: Alertmanager delivers it to the controller's webhook with a
   bearer token; pull mode: the controller polls Alertmanager's API, filtering
   on instance="memhp-guest", and Alertmanager pushes nothing;
4. the controller onlines the blocks (ZONE_MOVABLE) in the guest's kernel;
5. the exporter's metric shows them online, the alert resolves in Prometheus
   and in Alertmanager;
6. the controller's journal holds the action (alert fingerprint, every block
   offline -> online), and its own metrics, scraped by Prometheus, count it.

Only the rule files' ``for:`` of MemhpBlocksLeftOffline is shortened, by
rendering memhp/thresholds.yaml with one changed value through the real
generator.  Run by hand with ``flock /tmp/memhp-vm.lock .venv/bin/python -m
pytest tests/e2e -q`` (other suites boot guests too).
"""

from __future__ import annotations

import time
import urllib.error
import uuid
from pathlib import Path

import pytest

from alerts import generate
from tests.helpers.alertmanager import Alertmanager, alertmanager_config, have_alertmanager, webhook_receiver
from tests.helpers.prometheus import prometheus_binary, running_prometheus
from tests.vm.guest import Guest, VMConfig, venv_python
from tests.vm.guest_controller import GuestController

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.vm, pytest.mark.prometheus]

INSTANCE = "memhp-guest"  # the guest's host name: the instance label of both its targets
EXPORTER_PORT = 9100
CONTROLLER_PORT = 10302
ALERT = "MemhpBlocksLeftOffline"
RULE = "online-left-offline"
SLOW = 300  # seconds: TCG is slow, and other suites share the two cores


@pytest.fixture(scope="module")
def tools():
    missing = [n for n, ok in (("prometheus", prometheus_binary()), ("alertmanager", have_alertmanager())) if not ok]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (scripts/setup.sh installs them)", pytrace=False)


@pytest.fixture(scope="module")
def guest(vm_guest_factory, tools) -> Guest:
    g = vm_guest_factory(VMConfig(), fresh=True)  # private: this test hot-adds and leaves DIMMs online
    assert g.read("/sys/devices/system/memory/auto_online_blocks").strip() == "offline", (
        "the loop needs a kernel that leaves hot-added memory offline"
    )
    return g


@pytest.fixture(scope="module")
def exporter_port(guest) -> int:
    """memhp-exporter running in the guest; returns the host loopback port forwarded to it."""
    pid = guest.spawn(
        [str(venv_python()), "-m", "memhp.exporter.cli", f"--web.listen-address=:{EXPORTER_PORT}"],
        log="/run/memhp/results/e2e-exporter.log",
        cwd=str(REPO),
    )

    def ready():
        assert guest.poll(pid) is None, (guest.results / "e2e-exporter.log").read_text()
        try:
            status, body = guest.http_get("/metrics", EXPORTER_PORT, timeout=10)
        except (urllib.error.URLError, OSError):
            return False
        return status == 200 and "memhp_uevent_monitor_up 1.0" in body

    guest.wait_for(ready, SLOW, "the exporter in the guest to serve", interval=0.5)
    yield guest.forward(EXPORTER_PORT)
    guest.kill(pid)


def fast_rule_files(workdir: Path) -> list[Path]:
    """memhp's rule files, rendered by the real generator with the alert's for: at 6s."""
    t = generate.load_thresholds()
    t["blocks_left_offline"]["for"] = "6s"
    paths = []
    for name, text in generate.render(t).items():
        (workdir / name).write_text(text)
        paths.append(workdir / name)
    return paths


def start_controller(guest: Guest, mode: str, token: str, alertmanager_port: int) -> GuestController:
    """memhp-controller as a daemon in the guest (webhook mode, or pulling from the host's Alertmanager)."""
    ctl = GuestController(
        guest,
        rules=[
            {
                "name": RULE,
                "alertname": ALERT,
                "action": "online-new",
                "count": 4,
                "zone": "movable",
                "node_label": "node",
            }
        ],
        guards={"dry_run": False, "cooldown": "1s", "max_blocks_per_action": 8, "max_blocks_per_hour": 16},
        name=f"e2e-{mode}",
    )
    flags: list[str] = []
    if mode == "pull":
        # The guest reaches the host's loopback as 10.0.2.2 (QEMU user networking).
        flags = [
            f"--alertmanager.url=http://10.0.2.2:{alertmanager_port}",
            "--alertmanager.node-label=instance",
            f"--alertmanager.node-name={INSTANCE}",
            "--alertmanager.poll-interval=1s",
        ]
    ctl.start(CONTROLLER_PORT, *flags, token=token, timeout=SLOW)
    return ctl


def blocks_regex(blocks: list[int]) -> str:
    return "|".join(str(b) for b in blocks)


def alertmanager_for(mode: str, controller_port: int, token_file: Path) -> dict:
    """Webhook mode: Alertmanager posts to the controller; pull: it pushes nowhere, the controller fetches."""
    if mode == "webhook":
        return alertmanager_config(
            webhook_receiver(
                "memhp-controller",
                f"http://127.0.0.1:{controller_port}/webhook/alertmanager",
                bearer_token_file=token_file,
            ),
            group_by=["alertname", "instance", "node"],
        )
    # pull: Alertmanager pushes nowhere; the controller must fetch the alert itself
    return alertmanager_config(group_by=["alertname", "instance", "node"])


def check_journal(journal: list[dict], blocks: list[int], fingerprint: str, mode: str) -> None:
    """One action, attributed to this alert occurrence and source, each block onlined to Movable."""
    starts = [r for r in journal if r["type"] == "action_start"]
    assert len(starts) == 1, journal
    assert (starts[0]["rule"], starts[0]["action"], starts[0]["fingerprint"], starts[0]["source"]) == (
        RULE,
        "online-new",
        fingerprint,
        mode,
    )
    results = {r["block"]: r for r in journal if r["type"] == "block_result"}
    assert sorted(results) == sorted(blocks) and all(r["result"] == "ok" for r in results.values())
    attempts = [r for r in journal if r["type"] == "attempt_start"]
    assert sorted(r["block"] for r in attempts) == sorted(blocks)
    assert all(r["state_before"] == "offline" for r in attempts)
    ends = [r for r in journal if r["type"] == "attempt_end"]
    assert all(r["state_after"] == "online" and r["zone_after"] == "Movable" for r in ends), ends
    end = [r for r in journal if r["type"] == "action_end"]
    assert len(end) == 1 and (end[0]["result"], end[0]["changed"], end[0]["failed"]) == (
        "done",
        sorted(blocks),
        [],
    ), end


def wait_online_and_resolved(prom, am: Alertmanager, blocks: list[int]) -> None:
    """The exporter's metric shows the blocks online (as ranges, not one by one); the alert resolves."""

    # By default healthy blocks are described by lsmem-style ranges, not one by one.
    def covered() -> bool:
        ranges = prom.query(f'memhp_block_range_blocks{{instance="{INSTANCE}",state="online",zone="Movable"}}')
        spans = [(int(r["metric"]["first_block"]), int(r["metric"]["last_block"])) for r in ranges]
        return all(any(lo <= b <= hi for lo, hi in spans) for b in blocks)

    prom.wait_for(covered, SLOW, what="memhp_block_range_blocks online Movable over the DIMM's blocks")
    sel = f'instance="{INSTANCE}",block=~"{blocks_regex(blocks)}"'
    assert not prom.query(f"memhp_block_state{{{sel}}}"), "healthy blocks are not exported one by one"
    prom.wait_for(
        lambda: not [a for a in prom.alerts() if a["labels"]["alertname"] == ALERT],
        SLOW,
        what=f"{ALERT} resolved in Prometheus",
        last=prom.alerts,
    )
    am.wait_for_alerts(
        lambda alerts: not [a for a in alerts if a["labels"]["alertname"] == ALERT],
        timeout=SLOW,
        desc=f"{ALERT} resolved in Alertmanager",
    )


@pytest.mark.parametrize("mode", ["webhook", "pull"])
def test_full_loop(mode, guest, exporter_port, tmp_path):
    t0 = time.monotonic()
    timings: dict[str, float] = {}

    def mark(what: str) -> None:
        timings[what] = round(time.monotonic() - t0, 1)

    token = f"e2e-{uuid.uuid4().hex}"
    token_file = tmp_path / "controller-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    controller_port = guest.forward(CONTROLLER_PORT)

    am_config = alertmanager_for(mode, controller_port, token_file)
    am = Alertmanager(am_config, tmp_path / "alertmanager").start()
    controller = None
    dimm = None
    try:
        controller = start_controller(guest, mode, token, am.port)
        mark("controller up")
        scrape = [
            {
                "job_name": "memhp",
                "static_configs": [{"targets": [f"127.0.0.1:{exporter_port}"], "labels": {"instance": INSTANCE}}],
            },
            {
                "job_name": "memhp-controller",
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{controller_port}"], "labels": {"instance": INSTANCE}}],
            },
        ]
        with running_prometheus(
            tmp_path / "prometheus",
            scrape,
            fast_rule_files(tmp_path),
            scrape_interval="2s",
            evaluation_interval="1s",
            alertmanagers=[f"127.0.0.1:{am.port}"],
        ) as prom:
            prom.wait_scraped(timeout=SLOW, scrapes=2)
            assert prom.query(f'memhp_blocks{{instance="{INSTANCE}",state="offline"}}') == [], (
                "the guest must start with every block online"
            )
            mark("scraped")

            # 1. hot-add a DIMM; the kernel leaves it offline and does not retry.
            dimm = guest.hotplug_dimm("512M")
            blocks = guest.dimm_blocks(dimm)
            assert len(blocks) == 4
            guest.wait_for(lambda: all(guest.block_state(b) == "offline" for b in blocks), 60, "DIMM blocks offline")
            mark("DIMM added")

            # 2. Prometheus sees them offline and fires the alert.
            firing = prom.wait_for(
                lambda: prom.firing(ALERT, instance=INSTANCE, node="0"), SLOW, what=f"{ALERT} firing", last=prom.alerts
            )
            assert firing[0]["labels"]["severity"] == "warning"
            assert firing[0]["annotations"]["runbook_url"].endswith("#memhpblocksleftoffline")
            mark("alert firing")

            # 3. Alertmanager has it (and, in webhook mode, delivers it).
            am_alerts = am.wait_for_alerts(
                lambda alerts: [a for a in alerts if a["labels"]["alertname"] == ALERT],
                timeout=SLOW,
                desc=f"{ALERT} in Alertmanager",
            )
            fingerprint = next(a["fingerprint"] for a in am_alerts if a["labels"]["alertname"] == ALERT)

            # 4. the controller onlines the blocks in the guest's real kernel.
            guest.wait_for(
                lambda: all(guest.block_state(b) == "online" for b in blocks),
                SLOW,
                f"the controller ({mode}) to online blocks {blocks}; log:\n{controller.log_text()}",
                interval=0.5,
            )
            assert all(guest.valid_zones(b) == "Movable" for b in blocks)
            mark("blocks online")

            # 5. the exporter's metric shows them online; the alert resolves.
            wait_online_and_resolved(prom, am, blocks)
            mark("alert resolved")

            # 6. the journal holds the action, attributed to this alert occurrence and source.
            check_journal(controller.journal(), blocks, fingerprint, mode)

            # ...and the controller's own metrics, scraped by Prometheus through its authenticated endpoint.
            prom.wait_for(
                lambda: prom.query(
                    f'memhp_controller_actions_total{{instance="{INSTANCE}",action="online-new",result="ok"}} '
                    f"== {len(blocks)}"
                ),
                SLOW,
                what="controller actions counted in Prometheus",
            )
            source = "pull" if mode == "pull" else "webhook"
            assert prom.query(
                f'memhp_controller_alerts_received_total{{instance="{INSTANCE}",source="{source}",status="firing"}} > 0'
            )
            mark("journal and metrics checked")
    finally:
        print(f"full loop ({mode}) timings: {timings}")
        if controller is not None:
            controller.stop()
        am.stop()
        if dimm is not None:
            _unplug(guest, dimm)


def _unplug(guest: Guest, dimm: str) -> None:
    """Leave the private guest as found where the kernel lets us (Movable blocks offline reliably)."""
    try:
        for b in guest.dimm_blocks(dimm):
            if guest.block_state(b) == "online":
                guest.set_state(b, "offline", timeout=120)
        guest.unplug(dimm, timeout=120)
    except Exception as e:  # cleanup only: the guest is private and closed at session end
        print(f"cleanup of {dimm} failed: {e}")
