"""A real Prometheus scrapes both programs over TLS with basic auth from a web config file
(exporter-toolkit's format), with a scrape_config that has ``basic_auth`` and ``tls_config``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml

from memhp.controller.metrics import ControllerMetrics
from memhp.controller.sources.webhook import WebhookSettings, serve
from tests.helpers.prometheus import static_job
from tests.helpers.sink import RecordingSink
from tests.helpers.tls import make_self_signed_cert
from tests.helpers.wait import free_port, wait_until

pytestmark = pytest.mark.prometheus

PASSWORD = "scrape-pässword-0123456789"


def _web_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    cert, key = make_self_signed_cert(tmp_path)
    web = tmp_path / "web-config.yml"
    web.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": cert.name, "key_file": key.name, "min_version": "TLS12"},
                "basic_auth_users": {
                    "prometheus": bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
                },
                "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            }
        )
    )
    password_file = tmp_path / "scrape-password"
    password_file.write_text(PASSWORD)
    password_file.chmod(0o600)
    return web, cert, password_file


def _tls_job(name: str, target: str, cert: Path, password_file: Path) -> dict:
    return static_job(
        name,
        [target],
        scheme="https",
        tls_config={"ca_file": str(cert), "server_name": "localhost"},
        basic_auth={"username": "prometheus", "password_file": str(password_file)},
    )


def test_prometheus_scrapes_exporter_and_controller_over_tls_with_basic_auth(
    prometheus_factory, fixture_tree, tmp_path
):
    web, cert, password_file = _web_config(tmp_path)
    port = free_port()
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    exporter = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "memhp-exporter"),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(web),
            "--path.sysfs",
            str(fixture_tree / "sys"),
            "--path.procfs",
            str(fixture_tree / "proc"),
            "--path.kmsg",
            str(kmsg),
            "--no-collector.uevents",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    controller = serve(
        WebhookSettings(listen_address="127.0.0.1:0", web_config_file=str(web)), RecordingSink(), ControllerMetrics()
    )
    try:

        def listening() -> bool:
            assert exporter.poll() is None, exporter.stderr.read() if exporter.stderr else ""
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, timeout=20, desc="memhp-exporter listening")
        prom = prometheus_factory(
            [
                _tls_job("memhp", f"127.0.0.1:{port}", cert, password_file),
                _tls_job("memhp-controller", f"127.0.0.1:{controller.port}", cert, password_file),
            ],
            scrape_interval="1s",
        )
        prom.wait_scraped(timeout=60, scrapes=2)
        up = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
        assert up == {"memhp": "1", "memhp-controller": "1"}
        blocks = prom.query('sum(memhp_blocks{job="memhp"})')
        assert blocks and float(blocks[0]["value"][1]) > 0
        assert prom.query('memhp_controller_dry_run{job="memhp-controller"}')
    finally:
        controller.shutdown()
        exporter.terminate()
        assert exporter.wait(10) == 0
