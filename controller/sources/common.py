"""Pieces shared by the alert sources: fingerprints, timestamps, label maps.

Idempotency rests on two values every source must fill the same way:

* ``fingerprint``: Alertmanager's own when it sent one; otherwise the same
  hash Alertmanager computes (``model.LabelSet.Fingerprint`` in
  prometheus/common: 64-bit FNV-1a over the label names in sorted order, each
  name and value followed by the byte 0xff, printed as 16 hex digits), so a
  payload without fingerprints still dedups against one with them.
* ``starts_at``: normalised to UTC with millisecond precision
  (``2024-05-01T12:00:00.123Z``).  Alertmanager's webhook sends Go's
  nanosecond RFC 3339 form, its v2 API sends milliseconds; without the
  normalisation the same occurrence would look like two to the engine when
  both sources are used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

_FNV64_OFFSET = 14695981039346656037
_FNV64_PRIME = 1099511628211
_MASK64 = (1 << 64) - 1
_SEPARATOR = 0xFF  # prometheus/common model.SeparatorByte


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Alertmanager's fingerprint of a label set, as 16 lowercase hex digits."""
    h = _FNV64_OFFSET
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode("utf-8"):
                h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
            h = ((h ^ _SEPARATOR) * _FNV64_PRIME) & _MASK64
    return f"{h:016x}"


_RFC3339 = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})$")
GO_ZERO_TIME_YEAR = 1  # Go's zero time.Time marshals as 0001-01-01T00:00:00Z


class TimestampError(ValueError):
    pass


def parse_rfc3339(value: str) -> datetime:
    """Parse an RFC 3339 timestamp (up to nanoseconds) into an aware UTC datetime.

    Digits past microseconds are truncated (Python's datetime stops there); the
    canonical form keeps milliseconds only, so nothing that matters is lost.
    """
    m = _RFC3339.match(value)
    if not m:
        raise TimestampError(f"not an RFC 3339 timestamp: {value!r}")
    year, month, day, hour, minute, second, frac, offset = m.groups()
    micros = int((frac or "0")[:6].ljust(6, "0"))
    if offset in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if offset[0] == "+" else -1
        hours, minutes = int(offset[1:3]), int(offset[4:6])
        if hours > 23 or minutes > 59:  # timezone() refuses a day or more
            raise TimestampError(f"UTC offset out of range: {value!r}")
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=tz)
    except ValueError as e:
        raise TimestampError(f"not a valid date: {value!r}: {e}") from None
    if dt.year == GO_ZERO_TIME_YEAR:
        return dt  # converting Go's zero time to UTC could underflow; callers test for it
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00:00-02:00 is past year 9999 in UTC
        raise TimestampError(f"out of range in UTC: {value!r}") from None


def format_time(dt: datetime) -> str:
    """The canonical form: UTC, millisecond precision, ``Z``."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def canonical_time(value: str) -> str:
    try:
        return format_time(parse_rfc3339(value))
    except OverflowError:  # Go's zero time with a positive offset: before year 1 in UTC
        raise TimestampError(f"out of range in UTC: {value!r}") from None


def canonical_end_time(value: str | None) -> str | None:
    """``endsAt``: None for absent, empty or Go's zero time, else canonical."""
    if not value:
        return None
    dt = parse_rfc3339(value)
    if dt.year == GO_ZERO_TIME_YEAR:
        return None
    return format_time(dt)


def now_time() -> str:
    return format_time(datetime.now(UTC))
