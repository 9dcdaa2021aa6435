"""A relay too slow to read a request it was sent in time answers it, never 408 (issue 24).

Alertmanager does not retry a 408 ("unrecoverable error"), so a 408 from a
relay that is itself slow loses the notification until the next
group_interval.  Here a real relay process serves many concurrent TLS
clients; the process is stopped (SIGSTOP, as a CPU-starved or throttled
process is) while every client sends its whole request (the kernel has all
of it before the relay runs again), and continued only after its header and
read timeouts have passed, so that it must read each request in several
reads past its deadline.  Every request was sent in time: every answer must
be 200.  A client that really is slow gets 503, never 408: the relay cannot
tell a slow client from its own slowness, and Alertmanager retries a 503.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memhp.controller.alert import FIRING
from memhp.controller.sources.common import labels_fingerprint
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port, wait_until
from tests.helpers.web import secret_file, webhook_body

BIN = Path(sys.executable).parent
TOKEN = "am-to-relay-overload-0123456789"
NODE = "127.0.1.78"
CLIENTS = 24
# About 200 KiB: more than one read of the relay takes, and several TLS records (a group_by wider
# than instance sends such notifications).
ALERTS = 200
HEADER_TIMEOUT = 5.0  # room to connect every client before the stop, on a loaded machine
READ_TIMEOUT = 6.0


class Node:
    """A controller that accepts everything and counts the alerts."""

    def __init__(self, host: str) -> None:
        self.alerts = 0
        self.lock = threading.Lock()
        node = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with node.lock:
                    node.alerts += len(body["alerts"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def notification(n: int) -> tuple[bytes, bytes]:
    alerts = []
    for k in range(ALERTS):
        labels = {"alertname": "MemhpOverloadTest", "instance": f"{NODE}:10301", "n": str(n), "k": str(k)}
        alerts.append(
            {
                "status": FIRING,
                "labels": labels,
                "annotations": {"summary": "x" * 800},
                "startsAt": "2026-01-01T10:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "fingerprint": labels_fingerprint(labels),
            }
        )
    body = json.dumps(webhook_body(alerts, receiver="memhp-relay")).encode()
    head = (
        "POST /webhook/alertmanager HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Alertmanager/0.25.0\r\n"
        f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def status_of(sock: ssl.SSLSocket) -> int:
    sock.settimeout(120)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return 0  # closed without an answer
        data += chunk
    return int(data.split(b" ", 2)[1])


@pytest.fixture
def relay(tmp_path):
    node = Node(NODE)
    cert, key = make_self_signed_cert(tmp_path, "relay")
    token = secret_file(tmp_path / "token", TOKEN)
    port = free_port()
    log = open(tmp_path / "relay.log", "wb")
    proc = subprocess.Popen(
        [
            str(BIN / "memhp-relay"),
            f"--web.listen-address=127.0.0.1:{port}",
            f"--web.auth.bearer-token-file={token}",
            f"--web.tls.cert-file={cert}",
            f"--web.tls.key-file={key}",
            f"--web.header-timeout={HEADER_TIMEOUT}s",
            f"--web.read-timeout={READ_TIMEOUT}s",
            f"--target.template=http://{{instance:host}}:{node.port}/webhook/alertmanager",
            "--target.queue-size=64",  # every client's notification is for the same node
            "--target.deadline=60s",  # one node gets them one at a time, on a loaded machine
            "--log.level=warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    ctx = ssl.create_default_context(cafile=str(cert))

    def connect() -> ssl.SSLSocket:
        raw = socket.socket()
        # Room for the whole request in the kernel: sendall returns once it is sent, whatever the relay does.
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        raw.settimeout(30)
        raw.connect(("127.0.0.1", port))
        return ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    try:
        wait_until(lambda: connect().close() is None, timeout=30, catch=(OSError,), desc="relay up")
        yield proc, connect, node
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        node.close()


def test_a_relay_too_slow_to_read_answers_every_request_sent_in_time(relay, tmp_path):
    proc, connect, node = relay
    with ThreadPoolExecutor(CLIENTS) as pool:
        socks = list(pool.map(lambda _: connect(), range(CLIENTS)))  # accepted, handshakes done
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for i, s in enumerate(socks):
                head, body = notification(i)
                s.sendall(head + body)  # sent: all of it is in the kernel, on its way or arrived
            time.sleep(READ_TIMEOUT + 1.0)  # every deadline of the relay passes meanwhile
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        statuses = list(pool.map(status_of, socks))
    for s in socks:
        s.close()
    assert statuses.count(408) == 0, (statuses, (tmp_path / "relay.log").read_text()[-2000:])
    assert statuses == [200] * CLIENTS, statuses
    assert node.alerts == CLIENTS * ALERTS


def test_a_client_too_slow_for_the_read_timeout_gets_503_not_408(relay):
    """Alertmanager slow to send (its host overloaded) looks the same to the relay: 503, which it retries."""
    proc, connect, _ = relay
    s = connect()
    head, body = notification(0)
    s.sendall(head)
    s.sendall(body[:100])  # and never the rest
    assert status_of(s) == 503
    s.close()


BURST = 600  # connections at once, as Alertmanager opens one per node after group_wait


def test_a_burst_of_connections_waits_in_the_backlog_instead_of_being_dropped(relay):
    """While the relay cannot accept (stopped), the kernel completes a burst of connections for it:
    none is dropped (a dropped SYN costs the sender a 1 s, 3 s, 7 s... retransmission)."""
    proc, _, _ = relay
    port = int(next(a for a in proc.args if a.startswith("--web.listen-address=")).rsplit(":", 1)[1])
    os.kill(proc.pid, signal.SIGSTOP)
    socks: list[socket.socket] = []
    try:
        for _ in range(BURST):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        deadline = time.monotonic() + 0.8  # less than the first SYN retransmission (1 s)
        done: set[int] = set()
        while len(done) < BURST and time.monotonic() < deadline:
            for i, s in enumerate(socks):
                if i not in done and s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0 and _established(s):
                    done.add(i)
            time.sleep(0.05)
        assert len(done) == BURST, f"{len(done)} of {BURST} connections established"
    finally:
        for s in socks:
            s.close()
        os.kill(proc.pid, signal.SIGCONT)


def _established(s: socket.socket) -> bool:
    try:
        s.getpeername()
        return True
    except OSError:
        return False
