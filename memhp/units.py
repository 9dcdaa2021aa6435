"""Sizes, durations and block-id ranges as operators write them.

Sizes use binary units as ``chmem`` and ``lsmem`` do (``1G`` is 1 GiB);
durations use Prometheus' notation (``90s``, ``5m``, ``1h30m``).
"""

from __future__ import annotations

import math
import re

_SIZE = re.compile(r"\s*([0-9]+)\s*([KMGTP]?)(?:i?B)?\s*\Z", re.IGNORECASE)
_SIZE_SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w)")
_DURATION_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+))?\Z")

# The largest id range one --blocks argument may name: a guard against typos
# such as 0-99999 (the per-action cap refuses far earlier anyway).
MAX_RANGE_IDS = 4096


def parse_size(text: str | int) -> int:
    """``"1G"`` -> 1073741824; a bare integer is bytes.  Zero is refused."""
    if isinstance(text, bool):
        raise ValueError("a size is a number of bytes or a string such as '1G'")
    if isinstance(text, int):
        value = text
    else:
        m = _SIZE.match(str(text))
        if not m:
            raise ValueError(f"not a size: {text!r} (use bytes or K/M/G/T, e.g. '512M', '1G')")
        value = int(m.group(1)) << _SIZE_SHIFT[m.group(2).upper()]
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def parse_duration(text: str | int | float) -> float:
    """Prometheus-style ``"1h30m"`` -> 5400.0; a bare number (or numeric string)
    is seconds.  Negative is refused.  The one duration parser of memhp: the
    policy file, the command-line flags and ``memhp report`` all use it."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number of seconds or a string such as '30s'")
    if isinstance(text, str) and re.fullmatch(r"\s*[0-9]+(?:\.[0-9]+)?\s*", text):
        text = float(text)
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        s = str(text).strip()
        pos = 0
        value = 0.0
        for m in _DURATION_PART.finditer(s):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _DURATION_UNIT[m.group(2)]
            pos = m.end()
        if pos != len(s) or not s:
            raise ValueError(f"not a duration: {text!r} (use e.g. '500ms', '30s', '5m', '1h30m')")
    if not math.isfinite(value):
        # .nan/.inf, or 400 digits that float() rounds to inf: no timer can take it
        raise ValueError(f"duration must be finite: {text!r}")
    if value < 0:
        raise ValueError(f"duration must not be negative: {text!r}")
    return value


def positive_number(text: str) -> float:
    """A command-line number that must be finite and above 0 (``act --target-ratio``: nan compares false with
    everything, so no check would catch it later).  Named for argparse's message: ``invalid positive_number
    value: 'nan'``."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a finite number greater than 0: {text!r}")
    return value


def parse_id_ranges(text: str) -> list[int]:
    """``"40-43,47"`` -> [40, 41, 42, 43, 47].  Wildcards and empty sets are errors."""
    ids: list[int] = []
    text = text.strip()
    if not text:
        raise ValueError("empty block list")
    for part in text.split(","):
        m = _RANGE.match(part.strip())
        if not m:
            raise ValueError(f"not a block id or range: {part.strip()!r} (use e.g. '40-43,47'; wildcards are refused)")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"descending range {part.strip()!r}")
        if hi - lo + 1 > MAX_RANGE_IDS:
            raise ValueError(f"range {part.strip()!r} names more than {MAX_RANGE_IDS} blocks")
        ids.extend(range(lo, hi + 1))
    out = sorted(set(ids))
    return out


def format_size(n: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return f"{n}B"


def format_duration(seconds: float) -> str:
    """600.0 -> ``"10m"``, 5400 -> ``"1h30m"``, 0.5 -> ``"500ms"``: what ``--help`` shows and
    :func:`parse_duration` reads back to the same value."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms % 1000:
        return f"{seconds:g}s" if ms >= 1000 else f"{ms}ms"
    rest = ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out
