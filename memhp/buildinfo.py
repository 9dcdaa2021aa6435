"""What this build is: version, git revision where known, Python version.

One source for ``--version`` of every command and the ``memhp_build_info``
metric of every server.  The revision comes from ``MEMHP_REVISION`` (the
container image sets it from its build argument), else from the git checkout
an editable install runs from (read from ``.git`` directly: no ``git``
process), else ``unknown``.
"""

from __future__ import annotations

import functools
import os
import platform
import re
from pathlib import Path

from memhp import __version__

UNKNOWN = "unknown"
_SHA = re.compile(r"[0-9a-f]{40}")
_MAX_GIT_FILE = 1 << 20  # packed-refs of a large repository; more is not a ref file


def _read(path: Path, limit: int = 4096) -> str | None:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode("ascii", "replace").strip()
    except OSError:
        return None


def _git_dir(checkout: Path) -> Path | None:
    dot_git = checkout / ".git"
    if dot_git.is_dir():
        return dot_git
    text = _read(dot_git)  # a worktree: "gitdir: /path/to/.git/worktrees/name"
    if text and text.startswith("gitdir:"):
        return Path(text.split(":", 1)[1].strip())
    return None


def _resolve_ref(git_dir: Path, ref: str) -> str | None:
    common = git_dir
    common_text = _read(git_dir / "commondir")
    if common_text:
        common = (git_dir / common_text).resolve()
    for base in (git_dir, common):
        sha = _read(base / ref)
        if sha and _SHA.fullmatch(sha):
            return sha
    packed = _read(common / "packed-refs", _MAX_GIT_FILE) or ""
    for line in packed.splitlines():
        parts = line.split(" ", 1)
        if len(parts) == 2 and parts[1] == ref and _SHA.fullmatch(parts[0]):
            return parts[0]
    return None


def git_revision(checkout: Path) -> str | None:
    """The commit HEAD names in ``checkout``, or None when it is no git checkout."""
    git_dir = _git_dir(checkout)
    if git_dir is None:
        return None
    head = _read(git_dir / "HEAD")
    if not head:
        return None
    if _SHA.fullmatch(head):
        return head
    if head.startswith("ref:"):
        return _resolve_ref(git_dir, head.split(":", 1)[1].strip())
    return None


@functools.cache
def revision() -> str:
    env = os.environ.get("MEMHP_REVISION", "").strip()
    if env:
        return env[:64]
    # memhp/ sits at the top of the checkout in an editable install; in a wheel it is in site-packages.
    return git_revision(Path(__file__).resolve().parent.parent) or UNKNOWN


def python_version() -> str:
    return platform.python_version()


def labels() -> dict[str, str]:
    """The labels of ``memhp_build_info``."""
    return {"version": __version__, "revision": revision(), "pythonversion": python_version()}


def version_text(program: str) -> str:
    """``--version``'s text, laid out as Prometheus' programs print theirs."""
    return (
        f"{program}, version {__version__} (revision: {revision()})\n"
        f"  python version: {python_version()} ({platform.python_implementation()})\n"
        f"  platform: {platform.system().lower()}/{platform.machine()}"
    )
