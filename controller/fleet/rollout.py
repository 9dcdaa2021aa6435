"""Staged rollout: which hosts act on a rule, by a stable hash of (host, rule).

A host's bucket is a number in [0, 100) that depends only on its name and the
rule's name, never on the percentage: raising ``rollout`` from 5% to 10% keeps
every host of the 5% (their buckets are below 5, hence below 10) and adds
those between 5 and 10.  Hashing the rule name in too spreads the first hosts
of different rules over different machines, so one unlucky host is not the
canary of every rule.
"""

from __future__ import annotations

import hashlib

_SCALE = 1 << 64


def bucket(host: str, rule: str) -> float:
    """The host's place in [0, 100) for ``rule`` (SHA-256: the same on every machine and Python)."""
    digest = hashlib.sha256(f"{rule}\0{host}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") * 100.0 / _SCALE


def selected(host: str, rule: str, percent: float) -> bool:
    """True when ``host`` acts on ``rule`` at ``rollout: percent``; False means dry-run."""
    if percent >= 100:
        return True
    return bucket(host, rule) < percent
