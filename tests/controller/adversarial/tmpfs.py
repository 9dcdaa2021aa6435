"""A real, small tmpfs for a disk that fills and frees (mounted by the test, root only)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "1m"):
    """Mount a tmpfs of ``size`` at ``where`` for the block's duration; a missing mount fails."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        r = subprocess.run(["umount", str(where)], check=False, capture_output=True)
        if r.returncode:
            subprocess.run(["umount", "-l", str(where)], check=True)


def fill(directory: Path | str, name: str = "filler") -> str:
    """Write to ``directory/name`` until the file system is full; returns the filler's path."""
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    chunk = b"\0" * 65536
    try:
        while True:
            try:
                if os.write(fd, chunk) < len(chunk):
                    chunk = b"\0" * 512
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                if len(chunk) > 1:
                    chunk = chunk[: len(chunk) // 2]
                    continue
                break
    finally:
        os.close(fd)
    return path


def free(path: str) -> None:
    os.unlink(path)
