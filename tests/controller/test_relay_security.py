"""memhp-relay under attack: alerts' labels must not send the controllers' credentials elsewhere.

Anyone who can reach Alertmanager's API can post an alert with any labels (it has no
authentication unless --web.config.file says so).  The relay must only ever send a
controller's credentials to a host that the template's host position and --target.allow
admit, on the template's own scheme, port and path; over https, only to a controller whose
certificate names that host; and DNS must not hold a delivery past its deadline.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from memhp.controller import httpclient
from memhp.controller.alert import FIRING, Alert
from memhp.controller.metrics import ControllerMetrics
from memhp.controller.relay.delivery import Deliverer, DeliveryFailed, DeliverySettings
from memhp.controller.relay.hosts import AllowList
from memhp.controller.relay.metrics import RelayMetrics
from memhp.controller.relay.template import DEFAULT_TEMPLATE, TargetTemplate, Unresolvable
from memhp.controller.sources.webhook import WebhookSettings, serve
from tests.helpers.alertmanager import api_alert, requires_alertmanager
from tests.helpers.sink import RecordingSink
from tests.helpers.tls import make_ca, make_self_signed_cert, make_signed_cert
from tests.helpers.wait import free_port, wait_until
from tests.helpers.web import secret_file

REPO = Path(__file__).resolve().parents[2]
FLEET_EXAMPLE = REPO / "deploy" / "examples" / "alertmanager-memhp-fleet.yml"
RELAY_BIN = str(Path(sys.executable).parent / "memhp-relay")
RELAY_TOKEN = "am-to-relay-0123456789"
CTRL_TOKEN = "relay-to-controller-0123456789"
TOKEN_KEY = "0123456789abcdef0123456789abcdef0123456789abcdef"


# --------------------------------------------------------------------------- the template, as a property

# An oracle written apart from hosts.py: what a host may be, after substitution.
_NAME = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")


def is_one_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            return "%" not in host and isinstance(ipaddress.ip_address(host[1:-1]), ipaddress.IPv6Address)
        except ValueError:
            return False
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        last = host.rsplit(".", 1)[-1]
        return bool(_NAME.fullmatch(host.lower())) and len(host) <= 253 and not last.isdigit()


TEMPLATES = [
    DEFAULT_TEMPLATE,
    "https://{node}.nodes.example.com:8443/webhook/alertmanager?x=1",
    "http://{addr:host}/webhook",
    "http://{a|fallback}{b|}.example.com:81/p",
]
# Label values built from the characters that could move a URL boundary, plus any text at all.
URLISH = st.text(alphabet="abc019.-:/?#@%[]\n \\_~;=&x", max_size=40)
VALUES = st.one_of(URLISH, st.text(max_size=40), st.from_regex(r"\[[0-9a-f:.%]{0,30}\](:[0-9]{0,6})?", fullmatch=True))


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.sampled_from(TEMPLATES), value=VALUES, other=VALUES)
@example(text=DEFAULT_TEMPLATE, value="attacker.example:8080/x:", other="")
@example(text=DEFAULT_TEMPLATE, value="127.0.0.2\n", other="")
@example(text=DEFAULT_TEMPLATE, value="evil%2e%2e", other="")
@example(text=DEFAULT_TEMPLATE, value="a@127.0.0.2:1", other="")
@example(text=DEFAULT_TEMPLATE, value="[fe80::1%25eth0]:1", other="")
@example(text=DEFAULT_TEMPLATE, value="127.1", other="")
def test_a_label_can_only_choose_a_host(text, value, other):
    template = TargetTemplate(text)
    labels = dict.fromkeys(("instance", "node", "addr", "a"), value) | {"b": other}
    try:
        url = template.resolve(labels)
    except Unresolvable:
        return  # refused: fine, whatever the value
    want = urlsplit(text.replace("{", "").replace("}", "").replace(":host", "").replace("|", ""))
    got = urlsplit(url)
    assert (got.scheme, got.port, got.path, got.query, got.fragment) == (
        want.scheme, want.port, want.path, want.query, want.fragment,
    )  # fmt: skip
    assert got.username is None and got.password is None
    host = got.netloc.rsplit(":", 1)[0] if got.port is not None else got.netloc
    assert is_one_host(host), url
    if text == DEFAULT_TEMPLATE:  # {instance:host}: the value's own host, nothing else
        assert value == host or value.startswith(host + ":")


# --------------------------------------------------------------------------- the allow-list


def test_allow_list_names_match_suffixes_and_addresses_match_cidrs():
    allow = AllowList.parse([".nodes.example.com,ctrl.example.com", "10.0.0.0/8", "fd00::/8"])
    t = TargetTemplate(DEFAULT_TEMPLATE, allow)
    for ok in ("n1.nodes.example.com:10301", "N1.Nodes.Example.COM", "ctrl.example.com", "10.1.2.3:10301", "[fd00::7]"):
        t.resolve({"instance": ok})
    for refused in (
        "nodes.example.com",  # the suffix's own name is not under it
        "evilnodes.example.com",
        "n1.nodes.example.com.attacker.net",
        "x.ctrl.example.com",  # an exact name is exact
        "11.0.0.1",
        "[fe80::1]",
        "[::ffff:11.0.0.1]",  # IPv4-mapped: judged as its IPv4 address
        "localhost",
    ):
        with pytest.raises(Unresolvable) as e:
            t.resolve({"instance": refused})
        assert e.value.reason == "not_allowed", refused
    t.resolve({"instance": "[::ffff:10.0.0.1]"})


def test_cli_requires_an_allow_list_with_credentials(tmp_path):
    tok = secret_file(tmp_path / "tok", CTRL_TOKEN)
    key = secret_file(tmp_path / "key", TOKEN_KEY)
    for creds in ([f"--target.bearer-token-file={tok}"], [f"--target.token-key-file={key}"]):
        p = subprocess.run([RELAY_BIN, "--web.no-auth", *creds], capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--target.allow" in p.stderr, p.stderr
    p = subprocess.run(
        [
            RELAY_BIN,
            "--web.no-auth",
            f"--target.bearer-token-file={tok}",
            "--target.allow-any",
            "--target.max-attempts=0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2 and "level=warn" in p.stderr and "ANY host" in p.stderr, p.stderr


# --------------------------------------------------------------------------- a real Alertmanager, hostile alerts


def read_request(conn: socket.socket) -> bytes:
    """One HTTP request: headers, then Content-Length bytes of body (or what came before EOF)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    while length and len(body) < int(length.group(1)):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


class Listener:
    """A plain TCP listener that records every connection and every byte sent to it."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_server((host, port))
        self.connections = 0
        self.data = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            self.data += read_request(conn)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        except OSError:
            pass
        conn.close()

    def close(self) -> None:
        self.sock.close()


def fleet_config(relay_url: str, token_file: Path, ca_file: Path) -> dict:
    """deploy's fleet example, pointed at this relay, with quick timers."""
    config = yaml.safe_load(FLEET_EXAMPLE.read_text())
    for route in config["route"]["routes"]:
        route.update(group_wait="200ms", group_interval="1s", repeat_interval="1h")
    (wh,) = next(r for r in config["receivers"] if r["name"] == "memhp-relay")["webhook_configs"]
    wh["url"] = relay_url
    wh["http_config"]["authorization"]["credentials_file"] = str(token_file)
    wh["http_config"]["tls_config"]["ca_file"] = str(ca_file)
    return config


def relay_metric(url: str, ctx: ssl.SSLContext, name: str, **labels: str) -> float:
    req = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {RELAY_TOKEN}"})
    with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
        text = resp.read().decode()
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.split()[-1])
    return 0.0


@pytest.mark.prometheus
@requires_alertmanager
def test_hostile_alerts_posted_to_alertmanager_send_nothing_elsewhere(tmp_path, alertmanager):
    port = free_port()
    attacker_port = free_port("127.0.0.2")
    attacker = Listener("127.0.0.2", port)  # where the template's port points, on a host not allowed
    attacker_other = Listener("127.0.0.2", attacker_port)  # a port of the attacker's choice
    sink = RecordingSink()
    ctrl_token = secret_file(tmp_path / "ctrl-token", CTRL_TOKEN)
    controller = serve(
        WebhookSettings(listen_address=f"127.0.0.3:{port}", bearer_token_file=str(ctrl_token)),
        sink,
        ControllerMetrics(),
    )
    cert, key = make_self_signed_cert(tmp_path, "relay")
    relay_port = free_port()
    relay_token = secret_file(tmp_path / "relay-token", RELAY_TOKEN)
    log = open(tmp_path / "relay.log", "wb")
    relay = subprocess.Popen(
        [
            RELAY_BIN,
            f"--web.listen-address=127.0.0.1:{relay_port}",
            f"--web.auth.bearer-token-file={relay_token}",
            f"--web.tls.cert-file={cert}",
            f"--web.tls.key-file={key}",
            f"--target.template=http://{{instance:host}}:{port}/webhook/alertmanager",
            f"--target.bearer-token-file={ctrl_token}",
            "--target.allow=127.0.0.3/32,.nodes.example.com",
            "--target.deadline=3s",
            "--target.max-attempts=1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        relay_url = f"https://127.0.0.1:{relay_port}"
        ctx = ssl.create_default_context(cafile=str(cert))
        wait_until(lambda: urllib.request.urlopen(relay_url + "/-/healthy", context=ctx, timeout=2), desc="relay up")
        am = alertmanager(fleet_config(relay_url + "/webhook/alertmanager", relay_token, cert))
        hostile = [
            f"127.0.0.2:{attacker_port}/x:",
            f"127.0.0.2:{attacker_port}/x:{port}",
            "127.0.0.2",
            f"127.0.0.2:{port}",
            "127.0.0.2\n",
            f"a@127.0.0.2:{attacker_port}",
            f"127.0.0.3@127.0.0.2:{attacker_port}",
            f"127.0.0.3:{port}@127.0.0.2",
            "evil%2e%2e",
            "127.0.0.3%2f..%2f@127.0.0.2",
            "127.2",  # the C resolver's 127.0.0.2
            "2130706434",  # and again
            "[::ffff:127.0.0.2]",
            f"127.0.0.3:{port}/../..:{attacker_port}",
            f"127.0.0.2#{port}",
            "127.0.0.2?:1",
        ]
        alerts = [api_alert("MemhpHotAddedMemoryOffline", {"instance": v, "severity": "warning"}) for v in hostile]
        alerts.append(api_alert("MemhpHotAddedMemoryOffline", {"instance": "127.0.0.3:10301", "severity": "warning"}))
        am.post_alerts(alerts)  # no credentials: Alertmanager 0.25's API has none unless --web.config.file
        sink.wait_for(lambda got: got, timeout=30, desc="the legitimate alert at its controller")

        def unresolvable() -> float:
            return sum(
                relay_metric(relay_url, ctx, "memhp_relay_unresolvable_alerts_total", reason=r)
                for r in ("bad_label_value", "bad_url", "not_allowed")
            )

        def settled() -> bool:
            return unresolvable() >= len(hostile) or attacker.connections + attacker_other.connections > 0

        wait_until(settled, timeout=30, desc="every hostile alert refused")
        time.sleep(1.0)  # a stray delivery would have been made by now (deadline 3 s, one attempt)
        assert (attacker.connections, attacker_other.connections) == (0, 0), attacker.data + attacker_other.data
        assert [a.labels["instance"] for a in sink.alerts] == ["127.0.0.3:10301"]
        assert relay_metric(relay_url, ctx, "memhp_relay_unresolvable_alerts_total", reason="not_allowed") >= 2
    finally:
        relay.kill()
        relay.wait()
        log.close()
        controller.shutdown()
        attacker.close()
        attacker_other.close()


# --------------------------------------------------------------------------- TLS: the certificate names the host


class TLSListener(Listener):
    """A TLS server with a given certificate; records handshakes and decrypted bytes."""

    def __init__(self, host: str, port: int, cert: Path, key: Path) -> None:
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.handshakes = 0
        self.handshake_errors = 0
        super().__init__(host, port)

    def _handle(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            self.handshake_errors += 1
            conn.close()
            return
        self.handshakes += 1
        super()._handle(tls)


def one_alert(instance: str) -> list[Alert]:
    labels = {"alertname": "MemhpHotAddedMemoryOffline", "instance": instance}
    return [
        Alert("MemhpHotAddedMemoryOffline", FIRING, labels, starts_at="2026-01-01T00:00:00.000Z", fingerprint="f" * 16)
    ]


def test_a_controller_whose_certificate_names_another_host_gets_no_token(tmp_path):
    ca = make_ca(tmp_path)
    port = free_port()
    wrong = TLSListener("127.0.0.4", port, *make_signed_cert(tmp_path, ca, "other", "IP:127.0.0.5,DNS:other.example"))
    right = TLSListener("127.0.0.6", port, *make_signed_cert(tmp_path, ca, "right", "IP:127.0.0.6"))
    named = TLSListener("127.0.0.1", port, *make_signed_cert(tmp_path, ca, "named", "DNS:localhost"))
    tok = secret_file(tmp_path / "tok", CTRL_TOKEN)
    d = Deliverer(
        DeliverySettings(bearer_token_file=str(tok), ca_file=str(ca[0]), max_attempts=1, deadline=5), RelayMetrics()
    )
    try:
        with pytest.raises(DeliveryFailed):
            d.deliver(f"https://127.0.0.4:{port}/webhook/alertmanager", one_alert("n4"))
        d.deliver(f"https://127.0.0.6:{port}/webhook/alertmanager", one_alert("n6"))
        # A name: the relay resolves it itself, and still checks the certificate against the name.
        d.deliver(f"https://localhost:{port}/webhook/alertmanager", one_alert("n1"))
        wait_until(lambda: wrong.handshake_errors == 1, desc="the wrong certificate's handshake refused")
        assert (wrong.handshakes, wrong.data) == (0, b"")  # TLS failed before any byte of the request
        assert f"Bearer {CTRL_TOKEN}".encode() in right.data and b"Host: 127.0.0.6" in right.data
        assert b"Host: localhost" in named.data
    finally:
        for listener in (wrong, right, named):
            listener.close()


# --------------------------------------------------------------------------- per-node tokens


def test_per_node_tokens_open_one_node_each(tmp_path):
    key = secret_file(tmp_path / "key", TOKEN_KEY)
    port = free_port()
    hosts = ["127.0.0.7", "127.0.0.8"]
    p = subprocess.run(
        [RELAY_BIN, "derive-token", *(f"{h}:10301" for h in hosts), f"--target.token-key-file={key}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 0, p.stderr
    tokens = p.stdout.split()
    assert tokens == [hmac.new(TOKEN_KEY.encode(), h.encode(), hashlib.sha256).hexdigest() for h in hosts]
    sinks, servers = [], []
    for i, (host, token) in enumerate(zip(hosts, tokens, strict=True)):
        sinks.append(RecordingSink())
        servers.append(
            serve(
                WebhookSettings(
                    listen_address=f"{host}:{port}", bearer_token_file=str(secret_file(tmp_path / f"t{i}", token))
                ),
                sinks[-1],
                ControllerMetrics(),
            )
        )
    swapped = serve(  # a controller provisioned with another node's token refuses the relay
        WebhookSettings(
            listen_address=f"127.0.0.9:{port}", bearer_token_file=str(secret_file(tmp_path / "t9", tokens[0]))
        ),
        RecordingSink(),
        ControllerMetrics(),
    )
    d = Deliverer(DeliverySettings(token_key_file=str(key), max_attempts=1), RelayMetrics())
    try:
        for host, sink in zip(hosts, sinks, strict=True):
            d.deliver(f"http://{host}:{port}/webhook/alertmanager", one_alert(host))
            assert len(sink.alerts) == 1
        with pytest.raises(DeliveryFailed) as e:
            d.deliver(f"http://127.0.0.9:{port}/webhook/alertmanager", one_alert("n9"))
        assert e.value.reason == "http_refused"
    finally:
        for s in [*servers, swapped]:
            s.shutdown()


# --------------------------------------------------------------------------- DNS within the deadline


@pytest.fixture
def hanging_name(monkeypatch):
    """``hangs.invalid`` resolves never (until the test ends): a real blocking lookup at getaddrinfo,
    the seam every name resolution goes through; other names resolve as usual."""
    release = threading.Event()
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "hangs.invalid":
            release.wait(60)
            raise socket.gaierror(socket.EAI_AGAIN, "gave up")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield "hangs.invalid"
    release.set()


def test_a_hanging_dns_lookup_does_not_outlive_the_deadline(hanging_name):
    d = Deliverer(DeliverySettings(deadline=2, attempt_timeout=1, max_attempts=3), RelayMetrics())
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as e:
        d.deliver(f"http://{hanging_name}:10302/webhook/alertmanager", one_alert("n"))
    took = time.monotonic() - started
    assert e.value.reason == "deadline"
    assert took < 2 + 3  # the delivery deadline, plus slack for a loaded machine; the lookup hangs 60 s


def test_hanging_lookups_are_bounded_in_number_too():
    """Abandoned lookups end on the resolver's own timeout; until then at most MAX_PENDING_LOOKUPS
    exist, and a request beyond them fails at once instead of starting another thread."""
    release = threading.Event()

    def hang(host, port):
        release.wait(60)
        raise socket.gaierror(socket.EAI_AGAIN, "gave up")

    try:
        for _ in range(httpclient.MAX_PENDING_LOOKUPS):
            with pytest.raises(httpclient.DeadlineExceeded):
                httpclient.resolve("hangs.invalid", 80, 0.001, hang)
        threads = threading.active_count()
        with pytest.raises(OSError, match="already pending"):
            httpclient.resolve("hangs.invalid", 80, 30, hang)
        assert threading.active_count() == threads
    finally:
        release.set()
    wait_until(lambda: httpclient.resolve("hangs.invalid", 80, 5, lambda h, p: [("x",)]), desc="slots back")
