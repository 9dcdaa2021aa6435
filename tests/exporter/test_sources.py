"""A wrong --path.sysfs or --path.procfs fails loudly (issue 21 §2): a log line at start,
``memhp_source_available`` with the reason, and no ``memhp_collector_success 1`` without data.

Real directories, files and FIFOs; a really unreadable file by running the exporter as
``nobody`` (root reads through chmod 000)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.sources import (
    MEMINFO,
    MISSING,
    NO_MEMORY_HOTPLUG,
    NOT_SYSFS,
    OK,
    UNREADABLE,
    ZONEINFO,
    check_proc_file,
    check_sysfs,
)
from tests.helpers.wait import free_port, wait_until

BIN = Path(sys.executable).parent
EXPORTER = str(BIN / "memhp-exporter")
LOG_AT_START = re.compile(r"level=(error|warn) .*msg=\"source sysfs_memory unavailable \((\w+)\)")


def no_hotplug_sysfs(root: Path) -> Path:
    """A sysfs of a kernel built without memory hotplug: devices/system, no memory/ in it."""
    (root / "devices" / "system" / "cpu").mkdir(parents=True)
    return root


# --------------------------------------------------------------------------- the check, on real trees


def test_sysfs_reasons(tmp_path, host_archive_root):
    sysfs = host_archive_root / "sys"
    assert check_sysfs(Paths(str(sysfs))).reason == OK
    assert check_sysfs(Paths(str(tmp_path / "nonexistent"))).reason == MISSING
    (tmp_path / "file").write_text("")
    assert check_sysfs(Paths(str(tmp_path / "file"))).reason == NOT_SYSFS
    (tmp_path / "empty").mkdir()
    assert check_sysfs(Paths(str(tmp_path / "empty"))).reason == NOT_SYSFS
    assert check_sysfs(Paths(str(no_hotplug_sysfs(tmp_path / "nohp")))).reason == NO_MEMORY_HOTPLUG
    (tmp_path / "nohp" / "devices" / "system" / "memory").write_text("")  # a file where the directory goes
    assert check_sysfs(Paths(str(tmp_path / "nohp"))).reason == UNREADABLE


def test_procfs_reasons(tmp_path, host_archive_root):
    proc = host_archive_root / "proc"
    assert check_proc_file(ZONEINFO, str(proc / "zoneinfo"), str(proc)).reason == OK
    assert check_proc_file(MEMINFO, str(tmp_path / "meminfo"), str(tmp_path)).reason == MISSING
    missing_root = check_proc_file(MEMINFO, str(tmp_path / "none" / "meminfo"), str(tmp_path / "none"))
    assert missing_root.reason == MISSING and "--path.procfs" in missing_root.detail
    (tmp_path / "zoneinfo").mkdir()
    assert check_proc_file(ZONEINFO, str(tmp_path / "zoneinfo"), str(tmp_path)).reason == UNREADABLE
    os.mkfifo(tmp_path / "fifo")  # read, it would block the scrape forever
    assert check_proc_file(ZONEINFO, str(tmp_path / "fifo"), str(tmp_path)).reason == UNREADABLE


# --------------------------------------------------------------------------- the exporter, as a process


def once(*args: str, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(user or []), EXPORTER, "--once", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_issue_21_nonexistent_sysfs_is_no_success(tmp_path):
    """`--path.sysfs /nonexistent` said success 1 with no blocks and no log line."""
    r = once("--path.sysfs", str(tmp_path / "nonexistent"))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert 'memhp_collector_success{collector="blocks"} 0.0' in r.stdout
    assert 'memhp_collector_success{collector="config"} 0.0' in r.stdout
    assert f'memhp_source_available{{path="{tmp_path}/nonexistent/devices/system/memory",reason="missing"' in r.stdout
    assert "memhp_blocks{" not in r.stdout and "memhp_block_size_bytes" not in r.stdout
    assert [m.groups() for m in map(LOG_AT_START.search, r.stderr.splitlines()) if m] == [("error", "missing")]


def test_kernel_without_memory_hotplug_is_told_apart(tmp_path):
    r = once("--path.sysfs", str(no_hotplug_sysfs(tmp_path)))
    assert 'reason="no_memory_hotplug",source="sysfs_memory"} 0.0' in r.stdout
    assert 'memhp_collector_success{collector="blocks"} 0.0' in r.stdout
    assert [m.groups() for m in map(LOG_AT_START.search, r.stderr.splitlines()) if m] == [("warn", "no_memory_hotplug")]
    assert "this kernel has no memory hotplug" in r.stderr


def test_a_healthy_tree_says_every_source_is_available(host_archive_root):
    r = once("--path.sysfs", str(host_archive_root / "sys"), "--path.procfs", str(host_archive_root / "proc"))
    assert r.stderr == ""
    assert r.stdout.count('reason="ok"') == 3 and "memhp_source_available{" in r.stdout
    assert re.findall(r"^memhp_collector_success\{.*\} (\S+)$", r.stdout, re.M) == ["1.0"] * 4


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_a_file_nobody_may_read(host_archive_root):
    """chmod 000 means nothing to root: the exporter runs as nobody, for a real EACCES."""
    base = Path(tempfile.mkdtemp(prefix="memhp-sources-"))
    try:
        base.chmod(0o755)
        proc = base / "proc"
        shutil.copytree(host_archive_root / "proc", proc)
        proc.chmod(0o755)
        (proc / "meminfo").chmod(0o644)
        (proc / "zoneinfo").chmod(0o000)
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        r = once("--path.sysfs", str(host_archive_root / "sys"), "--path.procfs", str(proc), user=nobody)
        if "memhp_source_available" not in r.stdout:
            pytest.skip(f"nobody cannot run this venv's exporter: {r.stderr[-300:]}")
        assert f'memhp_source_available{{path="{proc}/zoneinfo",reason="unreadable",source="zoneinfo"}} 0.0' in (
            r.stdout
        )
        assert 'memhp_collector_success{collector="zones"} 0.0' in r.stdout
        assert 'memhp_collector_success{collector="meminfo"} 1.0' in r.stdout
        assert "Permission denied" in r.stderr and "level=error" in r.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_the_server_says_so_at_start_and_on_metrics(tmp_path):
    """Before any scrape, the log has the line; /metrics has the reason."""
    port = free_port()
    proc = subprocess.Popen(
        [
            EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--path.sysfs",
            str(tmp_path),  # a directory, but no sysfs
            "--no-collector.offline_failures",
            "--no-collector.uevents",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = [proc.stderr.readline() for _ in range(2)]  # "starting ...", then the source
        assert "starting memhp-exporter" in first[0]
        assert LOG_AT_START.search(first[1]).groups() == ("error", "not_sysfs"), first  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/metrics"
        body = wait_until(lambda: urllib.request.urlopen(url, timeout=10).read().decode(), timeout=60, catch=(OSError,))
        assert f'memhp_source_available{{path="{tmp_path}/devices/system/memory",reason="not_sysfs"' in body
        assert 'memhp_collector_success{collector="blocks"} 0.0' in body
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err
