"""The programs the tests drive for real (Debian packages, scripts/setup.sh).

A missing one is a broken set-up: the test FAILS with the package to
install, it is never skipped (the rule QEMU follows in tests/vm).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent

# program -> the Debian package scripts/setup.sh installs it from
PACKAGES = {
    "promtool": "prometheus",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "amtool": "prometheus-alertmanager",
    "chromium": "chromium",
    "chattr": "e2fsprogs",
    "openssl": "openssl",
    "systemd-analyze": "systemd",
}


def find_tool(*names: str) -> str | None:
    """The first of ``names`` found in the virtualenv's bin, then on PATH."""
    for name in names:
        if (VENV_BIN / name).exists():
            return str(VENV_BIN / name)
        found = shutil.which(name)
        if found:
            return found
    return None


def require_tool(*names: str) -> str:
    """Path of the first of ``names`` found; fails the calling test when none is installed."""
    found = find_tool(*names)
    if found is None:
        package = PACKAGES.get(names[0])
        where = f"Debian package {package}" if package else "the test dependencies"
        pytest.fail(f"{' / '.join(names)} not installed: run scripts/setup.sh ({where})", pytrace=False)
    return found
