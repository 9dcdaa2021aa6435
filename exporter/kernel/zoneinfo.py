"""Parser for ``/proc/zoneinfo``, by field name, never by position.

Layout (mm/vmstat.c, zoneinfo_show_print)::

    Node 0, zone   Normal
      per-node stats            <- only under the node's first populated zone
          nr_inactive_anon 369
      pages free     3840
            min      17
            ...
            protection: (0, 2991, 23997)
          nr_free_pages 3840
      pagesets                  <- per-CPU, skipped
        cpu: 0
                  high:  6145
      vm stats threshold: 28    <- per CPU too, despite the indentation
      node_unreclaimable:  0
      start_pfn:           1

Unpopulated zones stop after ``protection``.
"""

from __future__ import annotations

import re

from .fsread import ParseErrors, read_file
from .model import Zone, ZoneInfo

HEADER = re.compile(r"Node\s+([0-9]+),\s+zone\s+(\S+)\s*\Z")
KIND = "proc/zoneinfo"
_TRAILER = ("node_unreclaimable", "start_pfn")
_SECTIONS = {"per-node stats": "stats", "pagesets": "pagesets"}
_NAMED = ("free", "min", "low", "high", "spanned", "present", "managed", "cma")


def parse_zoneinfo(text: str, errors: ParseErrors) -> ZoneInfo:
    info = ZoneInfo()
    zone: Zone | None = None
    section = None  # "stats", "zone", "pagesets"
    bad = 0
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        m = HEADER.match(stripped)
        if m:
            zone = Zone(int(m.group(1)), m.group(2))
            info.zones.append(zone)
            section = "zone"
            continue
        if zone is None:
            bad += 1
            continue
        if stripped in _SECTIONS:
            section = _SECTIONS[stripped]
            continue
        section, key, text_value = _key_value(stripped.split(), section)
        if key is None:
            continue
        try:
            value = int(text_value)
        except ValueError:
            bad += 1
            continue
        if section == "stats":
            info.node_stats.setdefault(zone.node, {})[key] = value
        else:
            zone.fields[key] = value
    for z in info.zones:
        for name in _NAMED:
            setattr(z, name, z.fields.get(name))
    if bad:
        errors.add(KIND, f"{bad} unparsable line(s)")
    return info


def _key_value(parts: list[str], section: str | None) -> tuple[str | None, str | None, str]:
    """(section, key, value) of a line in a zone; key None for a line not kept."""
    if parts[0] == "pages" and len(parts) == 3 and parts[1] == "free":
        section, parts = "zone", parts[1:]
    key = parts[0].rstrip(":")
    # Per-CPU lines (including the per-CPU "vm stats threshold", at zone
    # indentation) repeat names such as "high": only the zone's own
    # trailer is kept.
    if section == "pagesets" and key not in _TRAILER:
        return section, None, ""
    if key == "protection" or len(parts) != 2:
        return section, None, ""
    return section, key, parts[1]


def read_zoneinfo(path: str, errors: ParseErrors) -> ZoneInfo | None:
    text = read_file(path, errors, KIND)
    return None if text is None else parse_zoneinfo(text, errors)
