"""Parser for ``/proc/meminfo`` (values in bytes)."""

from __future__ import annotations

from .fsread import ParseErrors, read_file

KIND = "proc/meminfo"


def parse_meminfo(text: str, errors: ParseErrors) -> dict[str, int]:
    out: dict[str, int] = {}
    bad = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or len(parts) > 2:
            bad += 1
            continue
        try:
            value = int(parts[0])
        except ValueError:
            bad += 1
            continue
        if len(parts) == 2:
            if parts[1] != "kB":
                bad += 1
                continue
            value *= 1024
        out[key.strip()] = value
    if bad:
        errors.add(KIND, f"{bad} unparsable line(s)")
    return out


def read_meminfo(path: str, errors: ParseErrors) -> dict[str, int] | None:
    text = read_file(path, errors, KIND)
    return None if text is None else parse_meminfo(text, errors)
