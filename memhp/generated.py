"""Generated files (rule files, dashboards, the PrometheusRule) are committed;
their generators either write them or check that the committed copies are
current, so CI catches a source edited without regenerating."""

from __future__ import annotations

import sys
from pathlib import Path


def sync(files: dict[Path, str], *, check: bool, command: str) -> int:
    """Write ``files`` (path -> text), or with ``check`` report the stale ones.

    Returns the exit code: 1 if ``check`` found a file out of date, else 0.
    """
    stale = []
    for path, text in files.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {command}", file=sys.stderr)
        return 1
    return 0
