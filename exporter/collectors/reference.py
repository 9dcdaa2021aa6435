"""The metric tables of docs/metrics.md, written from the collectors' declarations.

    .venv/bin/python -m memhp.exporter.collectors.reference           # rewrite the tables
    .venv/bin/python -m memhp.exporter.collectors.reference --check   # exit 1 if they are out of date

Each table sits between ``<!-- metrics:NAME -->`` and ``<!-- /metrics:NAME -->``
(NAME: a collector, or ``exporter`` for the families every scrape has); the
prose around them is written by hand.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from memhp.generated import sync

from . import REGISTERED, MemhpCollector
from .family import Family

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
COMMAND = ".venv/bin/python -m memhp.exporter.collectors.reference"


def table(families: Iterable[Family]) -> str:
    rows = [f.doc_row() for f in families]
    return "\n".join(["| metric | type | meaning |", "| --- | --- | --- |", *rows])


def tables() -> dict[str, str]:
    """Marker name -> its table, in exposition order."""
    out = {spec.name: table(spec.families) for spec in REGISTERED.values()}
    out["exporter"] = table(MemhpCollector.families)
    return out


def render(text: str) -> str:
    """``text`` with every table replaced by the one the declarations give."""
    for name, body in tables().items():
        start, end = f"<!-- metrics:{name} -->\n", f"\n<!-- /metrics:{name} -->"
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ValueError(f"docs/metrics.md: want one {start.strip()} ... {end.strip()} table")
        head, rest = text.split(start)
        tail = rest.split(end)[1]
        text = head + start + body + end + tail
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if docs/metrics.md is out of date")
    args = ap.parse_args(argv)
    return sync({DOC: render(DOC.read_text(encoding="utf-8"))}, check=args.check, command=COMMAND)


if __name__ == "__main__":
    raise SystemExit(main())
