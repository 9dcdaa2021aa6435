"""Notifications per second and per CPU-second of one relay process, against a reference relay in the same run.

    .venv/bin/python -m bench.relay_throughput --notifications 4000
    .venv/bin/python -m bench.relay_throughput --reference /tmp/main-tree/.venv/bin/python   # main's relay

A relay process (TLS in, bearer token, the default template's shape) gets
``--notifications`` notifications of one alert each, as Alertmanager sends
them with the shipped route (``group_by: [instance]``), from ``--concurrency``
concurrent clients, one connection per notification; every alert names a
node of its own (a loopback address), which a counting receiver in this
process answers.  Reported: wall time, notifications per second, and the
relay's CPU seconds per 1,000 notifications (from /proc: steadier than wall
time on a shared machine).  With ``--reference PYTHON`` the same load then
goes to the relay of another checkout, run by that checkout's interpreter
(e.g. ``git worktree add /tmp/main-tree main``, ``make setup`` there), and
the ratios are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.relay_fanout import TOKEN_AM, CountingReceiver, _raise_fd_limit, _secret, cpu_seconds
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port, wait_until

BIN = Path(sys.executable).parent


@dataclass
class Run:
    label: str
    notifications: int
    wall: float
    cpu: float
    answers: dict[int, int]

    @property
    def per_second(self) -> float:
        return self.notifications / self.wall

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.notifications

    def line(self) -> str:
        return (
            f"{self.label}: {self.notifications} notifications in {self.wall:.1f} s = {self.per_second:.0f}/s, "
            f"relay CPU {self.cpu:.1f} s = {self.cpu_per_1000:.2f} s per 1,000; answers {dict(sorted(self.answers.items()))}"
        )


def start_relay(workdir: Path, port: int, target_port: int, python: Path) -> subprocess.Popen:
    cert, key = workdir / "relay.crt", workdir / "relay.key"
    log = open(workdir / f"relay-{port}.log", "ab")
    proc = subprocess.Popen(
        [
            str(python),
            "-c",
            "import sys; from memhp.controller.relay.cli import main; sys.exit(main())",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.auth.bearer-token-file={workdir / 'am-token'}",
            f"--web.tls.cert-file={cert}",
            f"--web.tls.key-file={key}",
            f"--target.template=http://{{instance:host}}:{target_port}/webhook/alertmanager",
            "--log.level=warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=str(workdir),  # not a checkout: its memhp/ would shadow the interpreter's installed one
    )
    log.close()
    return proc


def notification(host: str) -> bytes:
    labels = {"alertname": "MemhpThroughput", "instance": f"{host}:10301", "severity": "warning"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {"summary": "s", "description": "d" * 200},
        "startsAt": "2026-01-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": f"{abs(hash(host)):016x}",
    }
    doc = {
        "version": "4",
        "groupKey": '{}:{instance="' + host + '"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "memhp-relay",
        "groupLabels": {"instance": labels["instance"]},
        "commonLabels": labels,
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://alertmanager",
        "alerts": [alert],
    }
    body = json.dumps(doc).encode()
    head = (
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Alertmanager/0.25.0\r\n"
        f"Authorization: Bearer {TOKEN_AM}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _one(port: int, ctx: ssl.SSLContext, data: bytes) -> int:
    for _ in range(50):  # a refused or reset connection is tried again, as Alertmanager does
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="127.0.0.1")
            writer.write(data)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 60)
            writer.close()
            status = int(line.split(b" ", 2)[1]) if line else 0
            if status == 200:
                return status
        except (OSError, ValueError, IndexError, TimeoutError, ssl.SSLError):
            status = -1
        await asyncio.sleep(0.2)
    return status


async def _load(port: int, ctx: ssl.SSLContext, bodies: list[bytes], concurrency: int) -> dict[int, int]:
    answers: dict[int, int] = {}
    queue = list(reversed(bodies))

    async def worker() -> None:
        while queue:
            status = await _one(port, ctx, queue.pop())
            answers[status] = answers.get(status, 0) + 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return answers


def measure(label: str, workdir: Path, target_port: int, hosts: list[str], concurrency: int, python: Path) -> Run:
    port = free_port()
    proc = start_relay(workdir, port, target_port, python)
    ctx = ssl.create_default_context(cafile=str(workdir / "relay.crt"))
    try:
        wait_until(lambda: _up(port), timeout=60, desc=f"{label} relay up")
        bodies = [notification(h) for h in hosts]
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        answers = asyncio.run(_load(port, ctx, bodies, concurrency))
        wall, cpu = time.monotonic() - t0, cpu_seconds(proc.pid) - cpu0
    finally:
        proc.terminate()
        proc.wait(10)
    return Run(label, len(hosts), wall, cpu, answers)


def _up(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def run(notifications: int, concurrency: int, reference: Path | None, workdir: Path) -> list[Run]:
    _raise_fd_limit(notifications)
    _secret(workdir / "am-token", TOKEN_AM)
    make_self_signed_cert(workdir, "relay")
    hosts = [f"127.2.{i // 250}.{i % 250 + 1}" for i in range(notifications)]
    target_port = free_port()
    sink = CountingReceiver("unused-no-credentials", hosts, target_port)
    sink.expected_auth = None  # type: ignore[assignment]  # the relay sends none here
    sink.start()
    try:
        runs = [measure("this tree", workdir, target_port, hosts, concurrency, BIN / "python")]
        if reference is not None:
            runs.append(measure(f"reference {reference}", workdir, target_port, hosts, concurrency, reference))
    finally:
        sink.stop()
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--notifications", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument(
        "--reference",
        type=Path,
        metavar="PYTHON",
        help="the interpreter of another checkout's .venv (e.g. main's, after make setup): its relay is measured second",
    )
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="memhp-relay-tp-") as d:
        runs = run(args.notifications, args.concurrency, args.reference, Path(d))
    for r in runs:
        print(r.line())
    if len(runs) == 2:
        new, old = runs
        print(
            f"ratio: {new.per_second / old.per_second:.2f}x notifications/s, "
            f"{old.cpu_per_1000 / new.cpu_per_1000:.2f}x less relay CPU per notification"
        )
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
