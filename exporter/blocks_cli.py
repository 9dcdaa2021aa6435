"""``memhp blocks``: an lsmem-like listing from the exporter's own model.

Columns and JSON keys follow ``lsmem -J -o RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES``
so the two can be compared line by line (tests do exactly that).
"""

from __future__ import annotations

import argparse
import json
import sys

from memhp.program import UsageError

from .kernel.accounting import BlockRange, merge_ranges
from .kernel.fsread import ParseErrors
from .kernel.memory_blocks import read_blocks, read_memory_config
from .kernel.model import MemoryBlock
from .kernel.nodes import block_node_map, read_nodes
from .kernel.paths import Paths
from .kernel.sources import MISSING, NO_MEMORY_HOTPLUG, NOT_SYSFS, UNREADABLE, check_sysfs

_ZONE_NAMES = {"none": "None", "HighMem": "Highmem"}  # lsmem's spelling


def lsmem_zones(zones: tuple[str, ...] | None) -> str | None:
    if not zones:
        return None
    return "/".join(_ZONE_NAMES.get(z, z) for z in zones)


def human_size(n: int) -> str:
    """lsmem's size format: 128M, 2.9G, 21G."""
    units = "BKMGTPE"
    value = float(n)
    i = 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    if i == 0:
        return f"{n}B"
    text = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{text}{units[i]}"


def _rows(blocks: list[MemoryBlock], all_blocks: bool) -> list[BlockRange]:
    if all_blocks:
        return [BlockRange(b.id, b.id, b.state, b.removable, b.node, b.valid_zones) for b in blocks]
    return merge_ranges(blocks)


def shown_removable(r: BlockRange) -> bool | None:
    """``removable`` only means something for online blocks; lsmem shows it for
    those alone (its JSON says false for the others; we say null)."""
    return r.removable if r.state == "online" else None


def render_json(rows: list[BlockRange], block_size: int) -> str:
    out = []
    for r in rows:
        out.append(
            {
                "range": f"0x{r.first * block_size:016x}-0x{(r.last + 1) * block_size - 1:016x}",
                "size": human_size(r.count * block_size),
                "state": r.state,
                "removable": shown_removable(r),
                "block": str(r.first) if r.first == r.last else f"{r.first}-{r.last}",
                "node": r.node,
                "zones": lsmem_zones(r.valid_zones),
            }
        )
    return json.dumps({"memory": out}, indent=3)


def render_table(rows: list[BlockRange], blocks: list[MemoryBlock], block_size: int) -> str:
    header = ("RANGE", "SIZE", "STATE", "REMOVABLE", "BLOCK", "NODE", "ZONES")
    table = [header]
    for r in rows:
        table.append(
            (
                f"0x{r.first * block_size:016x}-0x{(r.last + 1) * block_size - 1:016x}",
                human_size(r.count * block_size),
                r.state or "?",
                {True: "yes", False: "no", None: ""}[shown_removable(r)],
                str(r.first) if r.first == r.last else f"{r.first}-{r.last}",
                "?" if r.node is None else str(r.node),
                lsmem_zones(r.valid_zones) or "?",
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = [
        " ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
        for row in table
    ]
    online = sum(1 for b in blocks if b.state == "online") * block_size
    offline = sum(1 for b in blocks if b.state == "offline") * block_size
    lines += [
        "",
        f"Memory block size:    {human_size(block_size):>6}",
        f"Total online memory:  {human_size(online):>6}",
        f"Total offline memory: {human_size(offline):>6}",
    ]
    going = [b.id for b in blocks if b.state == "going-offline"]
    if going:
        lines.append(f"Going offline:        {len(going)} block(s)")
    return "\n".join(lines)


def add_blocks_parser(sub) -> None:
    p = sub.add_parser(
        "blocks",
        help="list memory blocks like lsmem",
        description="List memory blocks from sysfs, merged into ranges like lsmem unless --all.",
    )
    p.add_argument("--path.sysfs", dest="sysfs", default="/sys", help="sysfs mount point (default: /sys)")
    p.add_argument("-a", "--all", action="store_true", help="one line per block, no merging")
    p.add_argument("-J", "--json", action="store_true", help="JSON, with lsmem -J's keys")
    p.set_defaults(func=run_blocks)


def run_blocks(args: argparse.Namespace) -> int:
    paths = Paths(sysfs=args.sysfs)
    source = check_sysfs(paths)
    if source.reason in (MISSING, NOT_SYSFS, UNREADABLE):  # the flag names no usable sysfs
        raise UsageError(source.detail)
    if source.reason == NO_MEMORY_HOTPLUG:
        print(f"memhp blocks: {source.detail}", file=sys.stderr)
        return 1
    errors = ParseErrors()
    config = read_memory_config(paths.memory, errors)
    if config.block_size_bytes is None:
        print(
            f"memhp blocks: cannot read {paths.memory}/block_size_bytes: is this a sysfs with memory hotplug support?",
            file=sys.stderr,
        )
        return 1
    nodes = read_nodes(paths.node, errors)
    blocks = read_blocks(paths.memory, errors, block_node_map(nodes) if nodes else None)
    rows = _rows(blocks, args.all)
    if args.json:
        print(render_json(rows, config.block_size_bytes))
    else:
        print(render_table(rows, blocks, config.block_size_bytes))
    for kind, count in sorted(errors.counts().items()):
        print(
            f"memhp blocks: warning: {count} unreadable value(s) in {kind}: {errors.last_reason(kind)}", file=sys.stderr
        )
    return 0
