"""Staged rollout: which hosts act for a rule at a given percentage.

A host is selected when a stable hash of the rule name and the host name,
read as a fraction of 2**64, is below the percentage: the same answer on
every run and every machine, and raising the percentage only adds hosts
(a host below 5% is below 10% too).  The backtest uses the same function, so
it selects the hosts the live controllers select.
"""

from __future__ import annotations

from hashlib import sha256


def selected(host: str, rule: str, percent: float) -> bool:
    return int.from_bytes(sha256(f"{rule}\0{host}".encode()).digest()[:8], "big") / 2**64 * 100 < percent
