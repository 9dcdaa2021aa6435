"""The image's HEALTHCHECK script against an exporter that serves TLS and basic auth
from a web config file: it probes /-/healthy (no credentials) over HTTPS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import bcrypt
import yaml

from memhp.exporter.server import serve
from tests.helpers.tls import make_self_signed_cert

HEALTHCHECK = Path(__file__).resolve().parents[2] / "deploy" / "docker" / "healthcheck.py"


def test_healthcheck_probes_an_exporter_with_tls_and_basic_auth(registry, tmp_path):
    cert, key = make_self_signed_cert(tmp_path)
    web = tmp_path / "web.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
                "basic_auth_users": {"prometheus": bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()},
            }
        )
    )
    httpd = serve(registry, "127.0.0.1:0", web_config_file=str(web))
    cmdline = tmp_path / "cmdline"
    argv = ["memhp-exporter", "--web.listen-address", f"127.0.0.1:{httpd.port}", "--web.config.file", str(web)]
    cmdline.write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    def check() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(HEALTHCHECK), "--cmdline", str(cmdline)], capture_output=True, text=True, timeout=30
        )

    try:
        r = check()
        assert r.returncode == 0, r.stderr
    finally:
        httpd.shutdown()
    r = check()
    assert r.returncode == 1 and "https://127.0.0.1:" in r.stderr
