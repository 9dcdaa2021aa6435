"""The HTTP endpoint and the command line, run as real processes where it matters."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from memhp.exporter.cli import get_parser, main
from memhp.exporter.collectors import COLLECTORS
from memhp.exporter.server import parse_listen_address, serve
from tests.helpers.exporter import registry_for
from tests.helpers.trees import block_dirs, remove_block


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_server_paths(host_archive_root):
    httpd = serve(registry_for(host_archive_root), "127.0.0.1:0", "/custom")
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        status, body = _get(base + "/custom")
        assert status == 200 and "memhp_blocks{" in body
        status, body = _get(base + "/")
        assert status == 200 and 'href="/custom"' in body
        assert _get(base + "/metrics")[0] == 404
    finally:
        httpd.shutdown()


def test_scrape_during_hot_remove_never_errors(host_tree):
    httpd = serve(registry_for(host_tree), "127.0.0.1:0")
    url = f"http://127.0.0.1:{httpd.server_address[1]}/metrics"
    try:
        for b in block_dirs(host_tree)[20:60]:
            remove_block(host_tree, b)
            status, body = _get(url)
            assert status == 200
            assert 'memhp_collector_success{collector="blocks"} 1.0' in body
            assert f'block="{b.name[6:]}"' not in body
    finally:
        httpd.shutdown()


def test_listen_address_parsing():
    assert parse_listen_address(":10301") == ("0.0.0.0", 10301)
    assert parse_listen_address("[::1]:80") == ("::1", 80)
    for bad in ("10301", "host:", "h:99999"):
        with pytest.raises(ValueError):
            parse_listen_address(bad)


def test_help_documents_every_flag():
    text = get_parser().format_help()
    for flag in (
        "--web.listen-address",
        "--web.telemetry-path",
        "--path.sysfs",
        "--path.procfs",
        "--web.tls.cert-file",
        "--web.tls.key-file",
        "--log.level",
        "--once",
        "--once.output",
        "--collector.blocks.limit",
    ):
        assert flag in text
    for name in COLLECTORS:
        assert f"--collector.{name}" in text and f"--no-collector.{name}" in text


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--once.output", "x"], "--once.output needs --once"),
        (["--web.tls.cert-file", "c"], "go together"),
        (["--collector.blocks.limit", "-1"], "between 0 and"),
        (["--collector.blocks.state-interval", "0"], "between 100ms and"),
        (["--web.listen-address", "nope"], "HOST:PORT"),
    ],
)
def test_bad_flags_are_clear_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_once_output_is_atomic_textfile(host_archive_root, tmp_path):
    out = tmp_path / "memhp.prom"
    out.write_text("old\n")
    rc = main(
        [
            "--once",
            "--once.output",
            str(out),
            "--path.sysfs",
            str(host_archive_root / "sys"),
            "--path.procfs",
            str(host_archive_root / "proc"),
            "--no-collector.zones",
        ]
    )
    assert rc == 0
    text = out.read_text()
    assert text.startswith("# HELP") and "memhp_zone_" not in text and "memhp_blocks{" in text
    assert [p.name for p in tmp_path.iterdir()] == ["memhp.prom"]  # no temp file left behind


def test_served_process_end_to_end(host_archive_root, tmp_path):
    """The console script as SREs run it: listens, serves, stops on SIGTERM."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    proc = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "memhp-exporter"),
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--path.sysfs",
            str(host_archive_root / "sys"),
            "--path.procfs",
            str(host_archive_root / "proc"),
            "--path.kmsg",
            str(kmsg),
            "--no-collector.uevents",
        ],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/metrics")
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.1)
        assert status == 200 and "memhp_kmsg_watcher_up 1.0" in body
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
