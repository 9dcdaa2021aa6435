"""``--web.config.file`` (exporter-toolkit's format): parsing, and its effect on a real server."""

from __future__ import annotations

import base64
import gzip
import http.client
import re
import ssl
import subprocess
from pathlib import Path

import bcrypt
import pytest
import yaml

from memhp.controller.sources.webhook import WebhookConfigError
from memhp.exporter.cli import main as exporter_main
from memhp.exporter.server import serve as serve_exporter
from memhp.web import WebConfigError, parse_web_config
from tests.helpers.rawhttp import exchange, status_of
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.web import payload

PASSWORD = "pässwörd:with colon"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


def write_config(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --------------------------------------------------------------------------- parsing


def test_full_config_parses_and_paths_are_relative_to_the_file(tmp_path):
    cfg = parse_web_config(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "/abs/server.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "ca.pem",
                    "min_version": "TLS13",
                },
                "http_server_config": {"http2": True, "headers": {"x-frame-options": "deny"}},
                "basic_auth_users": {"prometheus": HASH},
            }
        ).encode(),
        str(tmp_path / "web.yml"),
    )
    assert cfg.tls is not None
    assert cfg.tls.cert_file == str(tmp_path / "server.crt") and cfg.tls.key_file == "/abs/server.key"
    assert cfg.tls.client_ca_file == str(tmp_path / "ca.pem") and cfg.tls.min_version == "TLS13"
    assert cfg.headers == {"X-Frame-Options": "deny"}
    assert cfg.users == {"prometheus": HASH.encode()}


def test_empty_file_means_plain_http_without_auth(tmp_path):
    cfg = parse_web_config(b"", str(tmp_path / "web.yml"))
    assert cfg.tls is None and cfg.users is None and dict(cfg.headers) == {}


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"tls_config": {}}, "unknown key tls_config"),
        ({"tls_server_config": {"cert_file": "a"}}, "missing key_file"),
        ({"tls_server_config": {"key_file": "a"}}, "missing cert_file"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "typo": 1}}, "unknown key tls_server_config.typo"),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "min_version": "TLS9"}}, "unknown TLS version"),
        (
            {"tls_server_config": {"cert_file": "a", "key_file": "b", "client_ca_file": "c"}},
            "without a client_auth_type",
        ),
        (
            {"tls_server_config": {"cert_file": "a", "key_file": "b", "client_auth_type": "RequireAnyClientCert"}},
            "not supported",
        ),
        ({"tls_server_config": {"cert_file": "a", "key_file": "b", "cipher_suites": ["X"]}}, "not supported"),
        (
            {"tls_server_config": {"cert_file": "a", "key_file": "b", "client_auth_type": "VerifyClientCertIfGiven"}},
            "needs client_ca_file",
        ),
        ({"http_server_config": {"headers": {"Server": "x"}}}, "can not be configured"),
        ({"http_server_config": {"headers": {"X-Content-Type-Options": "sniff"}}}, "invalid value"),
        ({"basic_auth_users": {"u": "plain-password"}}, "not a bcrypt hash"),
        ({"basic_auth_users": {"a:b": HASH}}, "contains ':'"),
        ([1, 2], "must be a mapping"),
    ],
)
def test_bad_configs_are_clear_errors(tmp_path, doc, message):
    with pytest.raises(WebConfigError, match=message):
        parse_web_config(yaml.safe_dump(doc).encode(), str(tmp_path / "web.yml"))


@pytest.mark.parametrize(
    "doc, message",
    [
        (
            {"tls_server_config": {"cert_file": 5, "key_file": "b"}},
            "tls_server_config.cert_file must be a string, got int",
        ),
        ({"tls_server_config": [1]}, "tls_server_config must be a mapping, got list"),
        (
            {"tls_server_config": {"cert_file": "a", "key_file": "b", "cert": None}},
            "tls_server_config.cert is not supported",
        ),
        ({"http_server_config": {"http2": None}}, "http_server_config.http2 must be true or false"),
        ({"http_server_config": {"nope": 1}}, "unknown key http_server_config.nope"),
        (
            {"http_server_config": {"headers": {"X-Frame-Options": 5}}},
            "headers.X-Frame-Options must be a string, got int",
        ),
        ({"http_server_config": {"headers": {1: "x"}}}, "http_server_config.headers: key 1 is not a string"),
        ({"basic_auth_users": {"u": 5}}, "basic_auth_users.u must be a string, got int"),
        ({"basic_auth_users": "x"}, "basic_auth_users must be a mapping, got str"),
        ({"rate_limit": None}, "rate_limit is not supported"),
    ],
)
def test_wrong_types_and_unsupported_keys_name_the_key(tmp_path, doc, message):
    with pytest.raises(WebConfigError, match=re.escape(message)):
        parse_web_config(yaml.safe_dump(doc).encode(), str(tmp_path / "web.yml"))


def test_yaml_errors_name_line_and_column(tmp_path):
    with pytest.raises(WebConfigError, match=r"web.yml:\d+:\d+: "):
        parse_web_config(b"basic_auth_users:\n  - [unclosed\n", str(tmp_path / "web.yml"))
    with pytest.raises(WebConfigError):
        parse_web_config(b"!!python/name:os.system x\n", str(tmp_path / "web.yml"))


# --------------------------------------------------------------------------- on the controller


def test_controller_basic_auth_users_from_the_web_config(controller, tmp_path):
    web = write_config(tmp_path / "web.yml", {"basic_auth_users": {"alertmanager": HASH}})
    c = controller(bearer_token_file=None, web_config_file=str(web))
    assert c.request(body=payload(), token=None, headers=basic("alertmanager", PASSWORD))[0] == 200
    for headers in (basic("alertmanager", "wrong"), basic("nobody", PASSWORD), {}):
        status, _, resp = c.request(body=payload(), token=None, headers=headers)
        assert status == 401 and resp.getheader("WWW-Authenticate").startswith("Basic")
    assert c.request("GET", "/-/healthy", token=None)[0] == 200
    # Users re-read when the file changes: no restart.
    new_hash = bcrypt.hashpw(b"rotated", bcrypt.gensalt(rounds=4)).decode()
    write_config(web, {"basic_auth_users": {"alertmanager": new_hash}})
    assert c.request(body=payload(), token=None, headers=basic("alertmanager", "rotated"))[0] == 200
    assert c.request(body=payload(), token=None, headers=basic("alertmanager", PASSWORD))[0] == 401


def test_controller_settings_with_a_web_config(controller, tmp_path):
    web = write_config(tmp_path / "web.yml", {"basic_auth_users": {"alertmanager": HASH}})
    with pytest.raises(WebhookConfigError, match="contradicts"):
        controller(bearer_token_file=None, no_auth=True, web_config_file=str(web))
    empty = write_config(tmp_path / "empty.yml", {})
    with pytest.raises(WebhookConfigError, match="authentication is required"):
        controller(bearer_token_file=None, web_config_file=str(empty))
    bad = write_config(tmp_path / "bad.yml", {"nope": 1})
    with pytest.raises(WebhookConfigError, match="unknown key nope"):
        controller(web_config_file=str(bad))
    cert, key = make_self_signed_cert(tmp_path)
    tls = write_config(tmp_path / "tls.yml", {"tls_server_config": {"cert_file": str(cert), "key_file": str(key)}})
    with pytest.raises(WebhookConfigError, match="give one"):
        controller(web_config_file=str(tls), tls_cert_file=str(cert), tls_key_file=str(key))


def test_headers_from_the_web_config_on_every_answer(controller, tmp_path):
    headers = {"Strict-Transport-Security": "max-age=31536000", "X-Content-Type-Options": "nosniff"}
    web = write_config(tmp_path / "web.yml", {"http_server_config": {"headers": headers}})
    c = controller(web_config_file=str(web))
    for method, path, token, status in (
        ("POST", "/webhook/alertmanager", "t0ken-for-web-tests-0123456789", 200),
        ("GET", "/metrics", None, 401),
        ("GET", "/-/healthy", None, 200),
    ):
        got, _, resp = c.request(method, path, body=payload() if method == "POST" else None, token=token)
        assert got == status
        for k, v in headers.items():
            assert resp.getheader(k) == v


def _client_context(cafile: Path, cert: tuple[Path, Path] | None = None, **kw) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def test_controller_mutual_tls_and_min_version(controller, tmp_path):
    server_cert, server_key = make_self_signed_cert(tmp_path, "server")
    client = make_self_signed_cert(tmp_path, "client")
    web = write_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {
                "cert_file": server_cert.name,
                "key_file": server_key.name,
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": client[0].name,
                "min_version": "TLS13",
            }
        },
    )
    c = controller(web_config_file=str(web))
    assert c.handle.url.startswith("https://")
    c.context = _client_context(server_cert, client)
    assert c.request(body=payload())[0] == 200
    c.context = _client_context(server_cert)  # no client certificate
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        c.request(body=payload())
    c.context = _client_context(server_cert, client, maximum_version=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        c.request(body=payload())
    assert len(c.sink.batches) == 1


def test_tls_certificate_renewal_is_picked_up(controller, tmp_path):
    cert, key = make_self_signed_cert(tmp_path, "first")
    web = write_config(tmp_path / "web.yml", {"tls_server_config": {"cert_file": "cur.crt", "key_file": "cur.key"}})
    (tmp_path / "cur.crt").write_bytes(cert.read_bytes())
    (tmp_path / "cur.key").write_bytes(key.read_bytes())
    c = controller(web_config_file=str(web))
    c.context = _client_context(cert)
    assert c.request(body=payload())[0] == 200
    cert2, key2 = make_self_signed_cert(tmp_path, "second")
    (tmp_path / "cur.key").write_bytes(key2.read_bytes())
    (tmp_path / "cur.crt").write_bytes(cert2.read_bytes())
    c.context = _client_context(cert2)
    assert c.request(body=payload())[0] == 200


# --------------------------------------------------------------------------- on the exporter


def test_exporter_basic_auth_tls_headers_gzip_and_landing_page(registry, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    web = write_config(
        tmp_path / "web.yml",
        {
            "tls_server_config": {"cert_file": str(cert), "key_file": str(key)},
            "basic_auth_users": {"prometheus": HASH},
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
        },
    )
    httpd = serve_exporter(registry, "127.0.0.1:0", web_config_file=str(web))
    ctx = _client_context(cert)

    def get(path, headers=None):
        conn = http.client.HTTPSConnection("127.0.0.1", httpd.port, timeout=10, context=ctx)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp
        finally:
            conn.close()

    try:
        auth = basic("prometheus", PASSWORD)
        assert get("/metrics")[0] == 401
        assert get("/metrics", basic("prometheus", "nope"))[0] == 401
        status, body, resp = get("/metrics", {**auth, "Accept-Encoding": "gzip"})
        assert status == 200 and resp.getheader("Content-Encoding") == "gzip"
        assert b"memhp_blocks{" in gzip.decompress(body)
        assert resp.getheader("X-Frame-Options") == "deny"
        status, body, resp = get("/metrics", {**auth, "Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200 and resp.getheader("Content-Type").startswith("application/openmetrics-text")
        assert body.endswith(b"# EOF\n")
        status, body, _ = get("/", auth)
        assert status == 200 and b'href="/metrics"' in body
        assert get("/-/healthy")[:2] == (200, b"OK\n")
        # Plain HTTP to the TLS port: no answer, the server goes on.
        assert status_of(exchange(httpd.port, b"GET /metrics HTTP/1.0\r\n\r\n")) == 0
        assert get("/metrics", auth)[0] == 200
    finally:
        httpd.shutdown()


def test_exporter_refuses_a_bad_web_config_at_start(tmp_path, capsys):
    bad = write_config(tmp_path / "web.yml", {"basic_auth_users": {"u": "not-a-hash"}})
    with pytest.raises(SystemExit) as e:
        exporter_main(["--web.config.file", str(bad)])
    assert e.value.code == 2 and "not a bcrypt hash" in capsys.readouterr().err


def test_htpasswd_style_2y_hashes_verify(controller, tmp_path):
    """Hashes made by htpasswd -B (the docs' recipe) are $2y$; bcrypt verifies them."""
    if subprocess.run(["which", "htpasswd"], capture_output=True).returncode != 0:
        hashed = "$2y$" + HASH[4:]  # same hash, htpasswd's prefix
    else:
        out = subprocess.run(["htpasswd", "-nbBC", "4", "", PASSWORD], capture_output=True, text=True, check=True)
        hashed = out.stdout.strip().lstrip(":")
    web = write_config(tmp_path / "web.yml", {"basic_auth_users": {"am": hashed}})
    c = controller(bearer_token_file=None, web_config_file=str(web))
    assert c.request(body=payload(), token=None, headers=basic("am", PASSWORD))[0] == 200
