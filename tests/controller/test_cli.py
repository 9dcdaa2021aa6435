"""``memhp-controller`` as a process: the parser, ``act``, exit codes, kill -9 and reconciliation."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memhp.controller.cli import get_parser
from tests.helpers.controller import policy_text, standard_layout
from tests.helpers.wait import wait_until
from tests.helpers.web import webhook_body

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin" / "memhp-controller"


def controller_cmd() -> list[str]:
    if BIN.exists():
        return [str(BIN)]
    return [sys.executable, "-m", "memhp.controller.cli"]


def run(args, timeout=60, **kw):
    return subprocess.run(
        controller_cmd() + list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO, **kw
    )


@pytest.fixture
def setup(tree, tmp_path):
    standard_layout(tree)
    cfg = tmp_path / "policy.yaml"
    cfg.write_text(policy_text(tmp_path))
    common = [
        "--config.file",
        str(cfg),
        "--path.sysfs",
        str(tree.root / "sys"),
        "--path.procfs",
        str(tree.root / "proc"),
    ]
    return cfg, common


def journal(tmp_path):
    p = tmp_path / "journal.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_parser_accepts_common_options_before_and_after_act():
    p = get_parser()
    a = p.parse_args(["--dry-run", "act", "offline", "--blocks", "40-43", "--zone", "movable"])
    assert (a.command, a.action, a.blocks, a.zone, a.dry_run) == ("act", "offline", [40, 41, 42, 43], "movable", True)
    a = p.parse_args(["act", "online", "--size", "1G", "--dry-run", "--path.sysfs", "/x"])
    assert (a.size, a.dry_run, a.path_sysfs, a.path_procfs) == (1 << 30, True, "/x", "/proc")
    a = p.parse_args(["--config.file", "c.yaml", "--web.listen-address", "127.0.0.1:1", "--once"])
    assert (a.command, a.config_file, a.web_listen_address, a.once) == (None, "c.yaml", "127.0.0.1:1", True)


@pytest.mark.parametrize(
    "argv",
    [
        ["act", "offline"],  # no target
        ["act", "offline", "--blocks", "*"],  # wildcard
        ["act", "offline", "--blocks", "1-3", "--size", "1G"],  # two targets
        ["act", "offline", "--size", "lots"],
        ["act", "shrink", "--count", "1"],
    ],
)
def test_parser_refuses_missing_wildcard_or_double_targets(argv, capsys):
    with pytest.raises(SystemExit) as e:
        get_parser().parse_args(argv)
    assert e.value.code == 2


def test_help_explains_act():
    r = run(["act", "--help"])
    assert r.returncode == 0
    for word in ("chmem", "valid_zones", "--blocks", "--size", "--dry-run", "Exit status", "reserve"):
        assert word in r.stdout


def test_check_config_reports_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("guards:\n  max_blocks_per_hour: 5\n  pause: /x\n")
    r = run(["check-config", "--config.file", str(bad)])
    assert r.returncode == 2 and f"{bad}:3:3: guards.pause: unknown key" in r.stderr
    good = tmp_path / "good.yaml"
    good.write_text("guards: {max_blocks_per_hour: 5}\n")
    r = run(["check-config", "--config.file", str(good)])
    assert r.returncode == 0 and json.loads(r.stdout)["guards"]["max_blocks_per_hour"] == 5


def test_act_offline_writes_the_token_once_and_journals(setup, tree, tmp_path):
    cfg, common = setup
    r = run(["act", "offline", "--size", "256M", *common])
    assert r.returncode == 0, r.stderr
    assert "memory11 offline: ok after 1 attempt(s)" in r.stdout and "memory10 offline: ok" in r.stdout
    # the real writer: one write of the bare token over the fixture's "online\n"
    assert (tree.block_dir(11) / "state").read_bytes() == b"offline"
    kinds = [rec["type"] for rec in journal(tmp_path)]
    assert kinds == ["action_start"] + ["attempt_start", "attempt_end", "block_result"] * 2 + ["action_end"]


def test_act_dry_run_changes_nothing(setup, tree, tmp_path):
    cfg, common = setup
    before = {i: (tree.block_dir(i) / "state").read_bytes() for i in range(16)}
    r = run(["act", "offline", "--count", "2", "--dry-run", *common, "--json"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "dry_run" and [s["block"] for s in out["plan"]] == [11, 10]
    assert {i: (tree.block_dir(i) / "state").read_bytes() for i in range(16)} == before
    assert [rec["type"] for rec in journal(tmp_path)] == ["dry_run"]


def test_act_refused_by_a_guard_exits_3(setup, tmp_path):
    cfg, common = setup
    (tmp_path / "pause").touch()
    r = run(["act", "offline", "--blocks", "11", *common])
    assert r.returncode == 3 and "refused by guard paused" in r.stderr


def test_act_named_block_with_valid_zones_none_is_refused(setup, tree):
    cfg, common = setup
    tree.set_block(11, "online", "none")
    r = run(["act", "offline", "--blocks", "11", *common])
    assert r.returncode == 3 and "valid_zones_none" in r.stderr
    assert tree.state(11) == "online"


def test_act_waits_for_and_then_gives_up_on_a_busy_controller(setup, tmp_path):
    cfg, common = setup
    fd = os.open(str(tmp_path / "journal.jsonl.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        r = run(["act", "offline", "--blocks", "11", "--lock-timeout", "300ms", *common])
        assert r.returncode == 4 and "another controller process" in r.stderr
    finally:
        os.close(fd)


def test_once_needs_the_pull_source(setup):
    cfg, common = setup
    r = run([*common, "--once", "--web.no-auth"])
    assert r.returncode == 2 and "--alertmanager.url" in r.stderr


def _procs_mentioning(text: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


@pytest.mark.parametrize("kernel_outcome,expected", [("online", "not_applied"), ("offline", "completed")])
def test_kill_9_mid_action_then_restart_reconciles(setup, tree, tmp_path, kernel_outcome, expected):
    cfg, common = setup
    cfg.write_text(policy_text(tmp_path, retry="attempts: 1\nattempt_timeout: 120s"))
    fifo = tree.make_state_fifo(11)  # the offline write blocks, like a stuck offline_pages()
    proc = subprocess.Popen(
        controller_cmd() + ["act", "offline", "--blocks", "11", *common],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(
            lambda: [r["type"] for r in journal(tmp_path)][-1:] == ["attempt_start"], 30, desc="the write in progress"
        )
        # the controller and its writer child (journalled before the fork: under load the child may lag)
        wait_until(lambda: len(_procs_mentioning(str(cfg))) == 2, 30, desc="the writer child")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # the writer child dies with its parent (PR_SET_PDEATHSIG): nothing keeps offlining
    wait_until(lambda: not _procs_mentioning(str(cfg)), 10, desc="writer child gone")
    before = (tmp_path / "journal.jsonl").read_bytes()
    recs = journal(tmp_path)
    assert [r["type"] for r in recs] == ["action_start", "attempt_start"]
    # what the kernel did meanwhile: abandoned (EINTR) or finished the offline
    fifo.unlink()
    tree.set_block(11, kernel_outcome, "Movable" if kernel_outcome == "online" else "Movable Normal")
    r = run(["act", "online", "--blocks", "0", "--dry-run", *common])  # any start-up reconciles
    assert r.returncode == 0, r.stderr
    assert f"reconciled an interrupted offline of memory11: {expected}" in r.stdout
    after = (tmp_path / "journal.jsonl").read_bytes()
    assert after.startswith(before)  # no record lost or rewritten
    rec = [r for r in journal(tmp_path) if r["type"] == "reconcile"]
    assert len(rec) == 1
    rec = rec[0]
    assert (rec["block"], rec["op"], rec["attempt"], rec["action_id"]) == (11, "offline", 1, recs[0]["action_id"])
    # state_before is None: the pre-write read of a FIFO yields nothing (a real state file says "online")
    assert (rec["state_before"], rec["state_now"], rec["outcome"]) == (None, kernel_outcome, expected)
    assert [r["result"] for r in journal(tmp_path) if r["type"] == "reconcile_action"] == ["interrupted"]
    # reconciled once: a second start-up finds nothing left open
    r = run(["act", "online", "--blocks", "0", "--dry-run", *common])
    assert "reconciled" not in r.stdout
    assert len([r for r in journal(tmp_path) if r["type"] == "reconcile"]) == 1


# offline, so that the real writer's bytes ("offline" over "online\n") read back as a real state
RULE_YAML = """\
- name: give-back
  alertname: MemhpHotAddedMemoryOffline
  action: offline
  count: 2
  node_label: node
"""


def _alert_doc(fp="abc", starts="2024-05-01T10:00:00.000Z"):
    return {
        "labels": {"alertname": "MemhpHotAddedMemoryOffline", "node": "0", "instance": "n1"},
        "annotations": {},
        "startsAt": starts,
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": fp,
    }


def test_daemon_acts_on_a_webhook_delivery_and_stops_on_sigterm(setup, tree, tmp_path):
    import urllib.request

    from tests.helpers.wait import free_port

    cfg, common = setup
    cfg.write_text(policy_text(tmp_path, rules=RULE_YAML))
    port = free_port()
    proc = subprocess.Popen(
        controller_cmd() + [*common, "--web.no-auth", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy():
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=2) as r:
                return r.status == 200

        wait_until(healthy, 30, desc="controller listening")
        body = webhook_body([{**_alert_doc(), "status": "firing", "generatorURL": "http://prom"}], groupKey="k")
        for _ in range(2):  # a repeat of the same occurrence does not act twice
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/webhook/alertmanager",
                data=json.dumps(body).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        wait_until(lambda: [r["type"] for r in journal(tmp_path)][-1:] == ["action_end"], 30, desc="action done")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'memhp_controller_actions_total{action="offline",errno="",result="ok"} 2.0' in metrics
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "effective configuration" in err
    assert [tree.state(i) for i in (9, 10, 11)] == ["online", "offline", "offline"]
    assert len([r for r in journal(tmp_path) if r["type"] == "action_start"]) == 1


def test_once_polls_alertmanager_acts_and_exits(setup, tree, tmp_path):
    import http.server
    import threading

    cfg, common = setup
    cfg.write_text(policy_text(tmp_path, rules=RULE_YAML))
    seen = []

    class AM(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.path)
            data = json.dumps(
                [{**_alert_doc(), "status": {"state": "active", "silencedBy": [], "inhibitedBy": []}}]
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), AM)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        r = run(
            [
                *common,
                "--once",
                "--alertmanager.url",
                f"http://127.0.0.1:{srv.server_port}",
                "--alertmanager.node-label",
                "instance",
                "--alertmanager.node-name",
                "n1",
                "--web.no-auth",
            ]
        )
    finally:
        srv.shutdown()
    assert r.returncode == 0, r.stderr
    assert seen and "/api/v2/alerts?" in seen[0] and "silenced=false" in seen[0]
    kinds = [rec["type"] for rec in journal(tmp_path)]
    assert kinds.count("action_start") == 1 and kinds[-1] == "action_end"
    assert [rec["source"] for rec in journal(tmp_path) if rec["type"] == "action_start"] == ["pull"]
    assert [tree.state(i) for i in (9, 10, 11)] == ["online", "offline", "offline"]
