"""Generated files (rule files, dashboards, the PrometheusRule) are committed;
their generators either write them or check that the committed copies are
current, so CI catches a source edited without regenerating."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# The monitoring mixin's data (mixin/mixin.libsonnet imports it), written by
# the same generators as the files it mirrors, relative to the repo.
MIXIN_DATA = Path("mixin") / "generated"


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
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {command}", file=sys.stderr)
        return 1
    return 0


def as_json(data: Any) -> str:
    """``data`` as the mixin stores it: JSON, which every jsonnet (C++, Go) imports as it is,
    in the order the generator made it, so a diff reads like the YAML's."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
