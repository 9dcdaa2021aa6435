"""Every node's and host's row on disk, read back in rank order as often as the report needs.

The report's memory must not grow with the fleet (issue 24: it grew by 8 KiB per host, 0.9 GiB at
100,000 hosts). The figures are collected a batch of hosts at a time (collect.py), and each batch's
rows land here, in an SQLite file in a temporary directory: SQLite sorts on disk with a bounded
cache, so ranking 200,000 rows holds a page cache, not the rows. Readers see the rows as a
sequence in rank order (``NodeRows``) and the hosts as a mapping by name (``InstanceRows``); each
iteration streams from the file, one decoded row at a time, and a row's ``rank`` is its position.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, overload

import msgspec

_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(dict)
CACHE_KIB = 4096  # SQLite's page cache: the rows' share of the report's memory, whatever the fleet
# Worst node first, ties by the highest peak, then by name (analysis.rank's order, which it replaces).
RANK_ORDER = "risk DESC, ratio_peak DESC, instance, node"


class RowStore:
    """The two tables, in a file that is deleted with the store."""

    def __init__(self, directory: str | Path | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="memhp-report-rows-", dir=directory)
        self.db = sqlite3.connect(Path(self._dir.name) / "rows.sqlite", check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute(
            "CREATE TABLE nodes (risk REAL, ratio_peak REAL, instance TEXT, node TEXT, data BLOB, "
            "PRIMARY KEY (instance, node))"
        )
        self.db.execute("CREATE TABLE instances (instance TEXT PRIMARY KEY, data BLOB)")
        self._indexed = False
        self.nodes = NodeRows(self)
        self.instances = InstanceRows(self)

    def add(self, nodes: Iterable[dict[str, Any]], instances: Iterable[dict[str, Any]]) -> None:
        """One batch's rows (a node or host seen again replaces its row)."""
        self.db.executemany(
            "INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?)",
            ((n["risk"], n.get("ratio_peak") or 0.0, n["instance"], n["node"], _ENC.encode(n)) for n in nodes),
        )
        self.db.executemany(
            "INSERT OR REPLACE INTO instances VALUES (?, ?)", ((i["instance"], _ENC.encode(i)) for i in instances)
        )
        self._indexed = False

    def ranked(self) -> None:
        """Index the rank order once the last batch is in (reads then need no sort)."""
        if not self._indexed:
            self.db.execute("DROP INDEX IF EXISTS rank_order")
            self.db.execute(f"CREATE INDEX rank_order ON nodes ({RANK_ORDER})")
            self._indexed = True

    def close(self) -> None:
        self.db.close()
        self._dir.cleanup()

    def __enter__(self) -> RowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NodeRows:
    """Every node's row, worst first, each with its ``rank`` (1 = worst)."""

    def __init__(self, store: RowStore) -> None:
        self._store = store

    def __len__(self) -> int:
        return int(self._store.db.execute("SELECT count(*) FROM nodes").fetchone()[0])

    def _rows(self, limit: int = -1, offset: int = 0) -> Iterator[dict[str, Any]]:
        self._store.ranked()
        cur = self._store.db.execute(f"SELECT data FROM nodes ORDER BY {RANK_ORDER} LIMIT ? OFFSET ?", (limit, offset))
        for rank, (data,) in enumerate(cur, offset + 1):
            row = _DEC.decode(data)
            row["rank"] = rank
            yield row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._rows()

    def get(self, key: tuple[str, str], default: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """The row of node ``key`` = (instance, node), without its rank (a lookup, not a scan)."""
        got = self._store.db.execute("SELECT data FROM nodes WHERE instance = ? AND node = ?", key).fetchone()
        return _DEC.decode(got[0]) if got is not None else default

    def __contains__(self, row: object) -> bool:
        """Whether a node with this row's (instance, node) is in the store."""
        if not isinstance(row, dict):
            return False
        key = (row.get("instance"), row.get("node"))
        return self._store.db.execute("SELECT 1 FROM nodes WHERE instance = ? AND node = ?", key).fetchone() is not None

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            if i.step not in (None, 1) or (i.start or 0) < 0 or (i.stop is not None and i.stop < 0):
                raise ValueError("NodeRows takes only forward slices from the front: rows[a:b]")
            start = i.start or 0
            limit = -1 if i.stop is None else max(0, i.stop - start)
            return list(self._rows(limit, start))
        if i < 0:
            i += len(self)
        got = list(self._rows(1, i))
        if not got:
            raise IndexError(i)
        return got[0]


class InstanceRows(Mapping[str, dict[str, Any]]):
    """Every host's row by name; iteration in name order."""

    def __init__(self, store: RowStore) -> None:
        self._store = store

    def __getitem__(self, name: str) -> dict[str, Any]:
        got = self._store.db.execute("SELECT data FROM instances WHERE instance = ?", (name,)).fetchone()
        if got is None:
            raise KeyError(name)
        return _DEC.decode(got[0])

    def __len__(self) -> int:
        return int(self._store.db.execute("SELECT count(*) FROM instances").fetchone()[0])

    def __iter__(self) -> Iterator[str]:
        for (name,) in self._store.db.execute("SELECT instance FROM instances ORDER BY instance"):
            yield name

    def values(self) -> Iterator[dict[str, Any]]:  # type: ignore[override]
        """Streamed in name order (Mapping's view would look every row up by name)."""
        for (data,) in self._store.db.execute("SELECT data FROM instances ORDER BY instance"):
            yield _DEC.decode(data)
