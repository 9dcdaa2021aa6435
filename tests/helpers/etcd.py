"""A real etcd (Debian's ``etcd-server``) on loopback for tests: a temporary
data directory, free client and peer ports on 127.0.0.1, a log file.  It can
be killed (SIGKILL) and started again on the same ports and data, as an etcd
outage and recovery look to its clients."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .wait import free_port, wait_until

ETCD = "etcd"


def require_etcd() -> str:
    path = shutil.which(ETCD)
    if path is None:
        pytest.fail("etcd not installed: run scripts/setup.sh (Debian package etcd-server)", pytrace=False)
    return path


@dataclass
class EtcdServer:
    workdir: Path
    client_port: int
    peer_port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self) -> EtcdServer:
        binary = require_etcd()
        self.workdir.mkdir(parents=True, exist_ok=True)
        peer = f"http://127.0.0.1:{self.peer_port}"
        log = open(self.workdir / "etcd.log", "ab")
        self.proc = subprocess.Popen(
            [
                binary,
                "--name=memhp-test",
                f"--data-dir={self.workdir / 'data'}",
                f"--listen-client-urls={self.url}",
                f"--advertise-client-urls={self.url}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=memhp-test={peer}",
                "--log-level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        wait_until(self.healthy, timeout=60, interval=0.1, desc="etcd healthy", last=self.log_tail)
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"etcd exited: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return json.load(r).get("health") == "true"
        except OSError:
            return False

    def log_tail(self) -> str:
        try:
            return (self.workdir / "etcd.log").read_text()[-2000:]
        except OSError:
            return ""

    def kill(self) -> None:
        """SIGKILL: an outage, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)

    def call(self, path: str, doc: dict) -> dict:
        """One v3 JSON gateway call (for the tests' own look at the keys)."""
        req = urllib.request.Request(f"{self.url}{path}", data=json.dumps(doc).encode(), method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)

    def count(self, prefix: str) -> int:
        from memhp.controller.fleet.etcd import _b64, prefix_end

        answer = self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix), "count_only": True})
        return int(answer.get("count", 0))


def new_etcd(workdir: Path) -> EtcdServer:
    return EtcdServer(workdir, free_port(), free_port())
