"""Backtest against reality (issue 22 §4): a real Prometheus, a real Alertmanager
and 22 real ``memhp-controller`` processes on fixture trees live through a few
minutes of injected conditions; then ``memhp-controller backtest`` replays the
same period with the same policy, from Prometheus alone.

* Prometheus scrapes memhp's collectors over each fixture tree (one small
  HTTP server here serves ``/metrics/<host>`` from the real collectors, as
  ``memhp-exporter --path.sysfs`` would) and a ``backtest_pressure`` gauge the
  test raises and lowers per host; it evaluates memhp's recording rules and two
  alerting rules over that gauge every EVAL seconds.
* Alertmanager delivers each host's alerts to that host's controller.
* Waves: all hosts fire (each offlines a block; two hosts' block has an
  immutable state file: the kernel-like refusal EPERM); ten fire again within
  the cooldown (refused); five fire after it (act again); eight fire the
  second rule, whose hourly block cap stops three of them.

The backtest's actions must be the journals' action starts (same hosts, rules,
times within one evaluation interval), and its refusals the journals'
refusals; it differs only where the journal shows the EPERM failure.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.controller.sysfs_tree import SysTree, ZoneSpec
from tests.helpers.alertmanager import Alertmanager, _require_alertmanager, alertmanager_config, webhook_receiver
from tests.helpers.exporter import registry_for
from tests.helpers.wait import free_port

pytestmark = [pytest.mark.prometheus]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSTS = 22
EVAL = 5  # seconds: the alerting rules' evaluation interval, and the backtest's --step
FIRE = 12  # seconds each wave's condition holds
GAP = 14  # seconds between the end of one wave and the next
TOKEN = "backtest-token"
EPERM_HOSTS = {"bt20", "bt21"}
WAVES = [  # (alert, hosts)
    ("BacktestPressure", [f"bt{i:02d}" for i in range(HOSTS)]),
    ("BacktestPressure", [f"bt{i:02d}" for i in range(10)]),  # within the cooldown: refused
    ("BacktestPressure", [f"bt{i:02d}" for i in range(5)]),  # after it: act again
    ("BacktestSqueeze", [f"bt{i:02d}" for i in range(3)] + [f"bt{i:02d}" for i in range(5, 10)]),
]
POLICY = {
    "guards": {"cooldown": "40s", "min_available": "256M", "max_blocks_per_hour": 2},
    "retry": {"attempts": 2, "attempt_timeout": "2s", "kill_grace": "500ms", "backoff_initial": "10ms"},
    "rules": [
        {"name": "shed", "alertname": "BacktestPressure", "action": "offline", "count": 1, "zone": "movable"},
        {"name": "squeeze", "alertname": "BacktestSqueeze", "action": "offline", "count": 1, "cooldown": "0s"},
    ],
}
ALERT_RULES = {
    "groups": [
        {
            "name": "backtest",
            "interval": f"{EVAL}s",
            "rules": [
                {"alert": name, "expr": f'backtest_pressure{{alert="{name}"}} > 0'}
                for name in ("BacktestPressure", "BacktestSqueeze")
            ],
        }
    ]
}


class Fleet:
    """The fixture trees and the pressure gauges, served over HTTP."""

    def __init__(self, root: Path) -> None:
        self.trees: dict[str, SysTree] = {}
        self.pressure: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()
        for i in range(HOSTS):
            t = SysTree(root / f"bt{i:02d}" / "root")
            t.set_zoneinfo(
                [ZoneSpec(0, "Normal", 4 * t.pages_per_block), ZoneSpec(0, "Movable", 4 * t.pages_per_block)]
            )
            for b in range(4):
                t.add_block(b, "online", "Normal")
            for b in range(4, 8):
                t.add_block(b, "online", "Movable")
            self.trees[f"bt{i:02d}"] = t

    def metrics(self, host: str) -> bytes:
        t = self.trees[host]
        with self.lock:
            gauges = [
                f'backtest_pressure{{alert="{a}"}} {self.pressure.get((host, a), 0)}\n'
                for a in ("BacktestPressure", "BacktestSqueeze")
            ]
        return generate_latest(registry_for(t.root)) + b"# TYPE backtest_pressure gauge\n" + "".join(gauges).encode()

    def set(self, alert: str, hosts: list[str], value: int) -> None:
        with self.lock:
            for h in hosts:
                self.pressure[(h, alert)] = value


def serve(fleet: Fleet) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            host = self.path.rsplit("/", 1)[-1]
            if host not in fleet.trees:
                self.send_error(404)
                return
            body = fleet.metrics(host)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except OSError:  # Prometheus gave up on this scrape (or is stopping): it scrapes again
                pass

        def log_message(self, *a) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def start_controllers(root: Path, fleet: Fleet, token: Path) -> dict[str, tuple[subprocess.Popen, Path, int]]:
    out = {}
    for host, tree in fleet.trees.items():
        d = tree.root.parent
        policy = json.loads(json.dumps(POLICY))
        policy["controller"] = {"journal": str(d / "journal.jsonl")}
        policy["guards"]["pause_file"] = str(d / "pause")
        policy["fleet"] = {"host": host}
        (d / "policy.yaml").write_text(yaml.safe_dump(policy))
        port = free_port()
        log = open(d / "controller.log", "ab")
        proc = subprocess.Popen(
            [
                str(BIN / "memhp-controller"),
                f"--config.file={d / 'policy.yaml'}",
                f"--path.sysfs={tree.root / 'sys'}",
                f"--path.procfs={tree.proc}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.auth.bearer-token-file={token}",
                "--log.level=warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        out[host] = (proc, d / "journal.jsonl", port)
    return out


def records(journal: Path) -> list[dict]:
    if not journal.exists():
        return []
    return [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]


def guard_refusals(port: int, token: str) -> dict[str, int]:
    """The controller's own count of refusals by guard (the journal holds one a minute per rule and guard)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        text = r.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "memhp_controller_guard_refusals_total" and s.value:
                out[s.labels["guard"]] = int(s.value)
    return out


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _immutable(tree: SysTree, block: int) -> Path:
    state = tree.block_dir(block) / "state"
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
        pytest.fail("chattr +i failed: the test needs root on a file system with immutable files (ext4)")
    return state


@dataclass
class Lived:
    prom_url: str
    policy: Path
    start: float
    end: float
    journals: dict[str, list[dict]]
    refusals: dict[str, dict[str, int]]


def _alertmanager(tmp_path: Path, ctrls: dict, token: Path) -> Alertmanager:
    receivers = [
        webhook_receiver(h, f"http://127.0.0.1:{port}/webhook/alertmanager", bearer_token_file=token)
        for h, (_, _, port) in ctrls.items()
    ]
    routes = [{"receiver": h, "matchers": [f'instance="{h}"']} for h in ctrls]
    cfg = alertmanager_config(
        {"name": "nobody"},
        *receivers,
        group_by=["..."],
        routes=routes,
        group_wait="500ms",
        group_interval="1s",  # a new firing of a resolved alert: delivered at once
        repeat_interval="1h",
    )
    return Alertmanager(cfg, tmp_path / "am").start()


def _prometheus(tmp_path: Path, prometheus_factory, fleet: Fleet, srv: ThreadingHTTPServer, am: Alertmanager):
    rules = tmp_path / "backtest.rules.yaml"
    rules.write_text(yaml.safe_dump(ALERT_RULES))
    scrape = {
        "job_name": "memhp",
        "static_configs": [
            {
                "targets": [f"127.0.0.1:{srv.server_address[1]}"],
                "labels": {"instance": h, "__metrics_path__": f"/metrics/{h}"},
            }
            for h in fleet.trees
        ],
    }
    return prometheus_factory(
        [scrape],
        [REPO / "alerts" / "memhp.rules.yaml", rules],
        scrape_interval="2s",  # the timeout too
        evaluation_interval="1s",
        alertmanagers=[f"127.0.0.1:{am.port}"],
    )


@pytest.fixture
def lived(tmp_path, prometheus_factory) -> Iterator[Lived]:
    """The waves, lived by real controllers; Prometheus stays up for the backtest."""
    _require_alertmanager()
    fleet = Fleet(tmp_path)
    srv = serve(fleet)
    locked = [_immutable(fleet.trees[h], 7) for h in sorted(EPERM_HOSTS)]  # offline takes the highest block first
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    ctrls = start_controllers(tmp_path, fleet, token)
    am = None
    try:
        am = _alertmanager(tmp_path, ctrls, token)
        prom = _prometheus(tmp_path, prometheus_factory, fleet, srv, am)
        prom.wait_scraped(timeout=120)
        time.sleep(2 * EVAL)
        start = time.time()
        for alert, hosts in WAVES:
            fleet.set(alert, hosts, 1)
            time.sleep(FIRE)
            fleet.set(alert, hosts, 0)
            time.sleep(GAP)
        time.sleep(2 * EVAL)
        end = time.time()
        journals = {h: records(j) for h, (_, j, _) in ctrls.items()}
        refusals = {h: guard_refusals(port, TOKEN) for h, (_, _, port) in ctrls.items()}
        yield Lived(prom.url, tmp_path / "bt00" / "policy.yaml", start, end, journals, refusals)
    finally:
        for proc, _, _ in ctrls.values():
            proc.terminate()
        for proc, _, _ in ctrls.values():
            proc.wait(timeout=30)
        if am is not None:
            am.stop()
        srv.shutdown()
        for state in locked:
            subprocess.run(["chattr", "-i", str(state)], check=False)


def _period(lv: Lived) -> list[str]:
    return [f"--prometheus={lv.prom_url}", f"--range={int(lv.end - lv.start) + 1}s", f"--end={lv.end:.3f}"]


def test_backtest_matches_the_journals_of_real_controllers(lived, tmp_path):
    out = tmp_path / "backtest"
    cmd = [str(BIN / "memhp-controller"), "backtest", *_period(lived), f"--step={EVAL}s"]
    run = subprocess.run(
        [*cmd, f"--config.file={lived.policy}", f"--out={out}", "--json"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    with (out / "backtest-actions.csv").open() as f:
        decisions = list(csv.DictReader(f))
    _same_actions(lived.journals, decisions)
    _differs_only_by_kernel_refusals(lived.journals, summary)
    _same_refusals(lived.refusals, decisions)
    # Each wave did what it was built for (alerts that flapped under load add to these, in both).
    assert summary["refusals_by_guard"]["cooldown"] >= 10
    assert summary["refusals_by_guard"]["max_blocks_per_hour"] >= 3
    assert summary["actions"] >= HOSTS + 5 + 5
    assert summary["hosts_hitting_hourly_cap"] >= 3

    # The same, as a section of memhp report.
    rep = tmp_path / "report"
    cmd = [str(BIN / "memhp"), "report", *_period(lived), "--step=5s", f"--out={rep}", f"--backtest.step={EVAL}s"]
    run = subprocess.run([*cmd, f"--policy={lived.policy}"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    section = json.loads((rep / "report.json").read_text())["backtest"]
    for key in ("actions", "refusals_by_guard", "by_rule", "hosts_hitting_hourly_cap", "peak_concurrent_actions"):
        assert section[key] == summary[key], key
    assert "Backtest of the policy" in (rep / "report.md").read_text()
    assert (rep / "backtest-actions.csv").read_text() == (out / "backtest-actions.csv").read_text()


def _same_actions(journals: dict[str, list[dict]], decisions: list[dict]) -> None:
    lived = {
        (h, r["rule"], float(r["ts"])) for h, recs in journals.items() for r in recs if r["type"] == "action_start"
    }
    acted = [(d["host"], d["rule"], _ts(d["time"])) for d in decisions if d["outcome"] == "act"]
    # Same hosts and rules, as often.
    assert sorted((h, r) for h, r, _ in lived) == sorted((h, r) for h, r, _ in acted), (lived, acted)
    # Same times, within one evaluation interval (the backtest's time is the rule evaluation's own;
    # the journal's is the delivery's: Alertmanager's group_wait and the controller's work later).
    for h, r, t in acted:
        near = [lt for lh, lr, lt in lived if (lh, lr) == (h, r) and abs(lt - t) <= EVAL]
        assert near, (h, r, t, sorted(lt for lh, lr, lt in lived if (lh, lr) == (h, r)))


def _differs_only_by_kernel_refusals(journals: dict[str, list[dict]], summary: dict) -> None:
    """Every action the backtest takes was taken; only the EPERM hosts' failed, which it cannot know."""
    failed = {h for h, recs in journals.items() for r in recs if r["type"] == "action_end" and r["result"] != "done"}
    assert failed == EPERM_HOSTS
    eperm = {
        h for h, recs in journals.items() for r in recs if r["type"] == "attempt_end" and r.get("errno_name") == "EPERM"
    }
    assert eperm == EPERM_HOSTS
    assert any("kernel refusals" in line for line in summary["cannot_know"])


def _same_refusals(refusals: dict[str, dict[str, int]], decisions: list[dict]) -> None:
    """The controllers' own counts, host by host and guard by guard (the journal holds one a minute)."""
    refused_bt: dict[str, dict[str, int]] = {}
    for d in decisions:
        if d["outcome"] == "refused":
            by_guard = refused_bt.setdefault(d["host"], {})
            by_guard[d["guard"]] = by_guard.get(d["guard"], 0) + 1
    assert refused_bt == {h: r for h, r in refusals.items() if r}
