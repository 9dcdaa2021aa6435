"""What each of the three servers says about itself, over real HTTP (issue 21 §1):
``process_*``, ``python_info`` and ``memhp_build_info`` on /metrics, ``/-/healthy``
and ``/-/ready`` without credentials."""

from __future__ import annotations

import platform
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from memhp import __version__
from tests.helpers.wait import free_port, wait_until

BIN = Path(sys.executable).parent


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def server_argv(program: str, port: int, tmp: Path) -> list[str]:
    listen = f"--web.listen-address=127.0.0.1:{port}"
    if program == "memhp-exporter":
        # this machine's /sys and /proc, read only; no kernel log, no netlink: start-up is the block read
        return [listen, "--no-collector.offline_failures", "--no-collector.uevents"]
    if program == "memhp-controller":
        # no rules and --dry-run: it never acts
        return [listen, "--web.no-auth", "--dry-run", f"--journal.path={tmp / 'journal.jsonl'}"]
    return [listen, "--web.no-auth"]


@pytest.fixture(params=["memhp-exporter", "memhp-controller", "memhp-relay"])
def server(request, tmp_path) -> Iterator[tuple[str, str]]:
    program = request.param
    port = free_port()
    log = (tmp_path / "stderr").open("w+")
    proc = subprocess.Popen(
        [str(BIN / program), *server_argv(program, port, tmp_path)], stdout=subprocess.DEVNULL, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: get(base + "/-/ready")[0] == 200, timeout=90, catch=(OSError,), desc=f"{program} ready")
        yield program, base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        assert "Traceback" not in log.read()
        log.close()


def test_health_and_readiness_need_no_credentials(server):
    _, base = server
    assert get(base + "/-/healthy") == (200, "OK\n")
    assert get(base + "/-/ready") == (200, "Ready\n")


def test_process_metrics_and_build_info(server):
    _, base = server
    status, text = get(base + "/metrics")
    assert status == 200
    for name in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_open_fds",
        "python_info",
    ):
        assert re.search(rf"^{name}(\{{[^}}]*\}})? \S+$", text, re.M), name
    info = re.findall(r"^memhp_build_info\{(.*)\} 1\.0$", text, re.M)
    assert len(info) == 1, text
    labels = dict(re.findall(r'(\w+)="([^"]*)"', info[0]))
    assert labels["version"] == __version__
    assert labels["pythonversion"] == platform.python_version()
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", labels["revision"]), labels
