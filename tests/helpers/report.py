"""Running `memhp report` and looking at its page in headless Chromium: shared by tests/report."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers.tools import require_tool

REPO = Path(__file__).resolve().parents[2]


def memhp(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command line (``memhp`` is memhp.cli:main)."""
    return subprocess.run(
        [sys.executable, "-m", "memhp.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )


def chromium(args: list[str], page: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    profile.mkdir()
    argv = [
        require_tool("chromium", "chromium-browser"),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
        page.as_uri(),
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def page_height(page: Path, tmp_path: Path, width: int = 1280, tall: int = 16000) -> int:
    """The rendered page's height in pixels: a screenshot in a window taller
    than the page, and the last row that is not the white background."""
    from PIL import Image

    shot = tmp_path / f"height-{len(list(tmp_path.iterdir()))}.png"
    r = chromium([f"--screenshot={shot}", f"--window-size={width},{tall}", "--hide-scrollbars"], page, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    with Image.open(shot) as im:
        box = Image.eval(im.convert("L"), lambda v: 255 - v).getbbox()
    assert box is not None, "blank page"
    return box[3]


def console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def fails_in_one_line(r: subprocess.CompletedProcess, *needles: str, status: int = 1) -> None:
    """One line on stderr; status 1 for a failure, 2 for a usage error."""
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("memhp report: error: "), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
