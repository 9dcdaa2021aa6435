"""Fixture trees for exporter tests: archives captured from real kernels by
``tests/vm/capture.py``, unpacked into a tmp dir (symlinks kept), or a fresh
read-only capture of this machine's own /sys and /proc (taken once per
session by tests/exporter/conftest.py, unpacked per test)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CAPTURE = REPO / "tests" / "vm" / "capture.py"
LSMEM_COLUMNS = "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES"


def fixture_archives() -> list[Path]:
    return sorted(FIXTURES.glob("*.tar.gz"))


def unpack(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")  # keeps symlinks, refuses escapes
    return dest


def capture_host_archive(archive: Path) -> Path:
    """Snapshot this machine's real sysfs/procfs subset into ``archive`` (reads only; a subprocess)."""
    subprocess.run([sys.executable, str(CAPTURE), "--out", str(archive)], check=True, capture_output=True)
    return archive


def block_dirs(root: Path) -> list[Path]:
    return sorted((root / "sys/devices/system/memory").glob("memory[0-9]*"), key=lambda p: int(p.name[6:]))


def remove_block(root: Path, block: Path) -> None:
    """Remove a block as hot-remove does: its directory and the node's link to it."""
    for link in (root / "sys/devices/system/node").glob(f"node*/{block.name}"):
        link.unlink()
    shutil.rmtree(block)


def lsmem(root: Path | str, *extra: str) -> str:
    argv = ["lsmem", "-J", "-a", "-o", LSMEM_COLUMNS, *extra]
    if str(root) != "/":
        argv += ["--sysroot", str(root)]
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def write(path: Path, data: bytes | str) -> None:
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as f:
        f.write(data)
    os.utime(path)
