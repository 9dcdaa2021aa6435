"""Reader for ``/sys/devices/system/node``: nodes and their memory blocks."""

from __future__ import annotations

import os
import re

from .fsread import ParseErrors, read_attr
from .model import Node, parse_block_name

NODE_DIR = re.compile(r"node([0-9]+)\Z")


def parse_nodelist(text: str | None, errors: ParseErrors, kind: str) -> set[int] | None:
    """Kernel node lists: ``0-2,4``; an empty file is an empty set."""
    if text is None:
        return None
    out: set[int] = set()
    if not text:
        return out
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        errors.add(kind, f"not a node list: {text[:40]!r}")
        return None
    return out


def read_nodes(node_dir: str, errors: ParseErrors) -> list[Node]:
    """Nodes with their block membership; an empty list without CONFIG_NUMA."""
    try:
        names = os.listdir(node_dir)
    except FileNotFoundError:
        return []
    except OSError as e:
        errors.add("node", f"listdir: {os.strerror(e.errno or 0)}")
        return []
    lists = {
        key: parse_nodelist(read_attr(os.path.join(node_dir, key), errors, f"node/{key}"), errors, f"node/{key}")
        for key in ("has_memory", "has_normal_memory", "online")
    }
    nodes = []
    for name in names:
        m = NODE_DIR.match(name)
        if not m:
            continue
        node_id = int(m.group(1))
        try:
            entries = os.listdir(os.path.join(node_dir, name))
        except FileNotFoundError:
            continue  # node removed while we read
        except OSError as e:
            errors.add("nodeN", f"listdir: {os.strerror(e.errno or 0)}")
            continue
        blocks = sorted(i for i in map(parse_block_name, entries) if i is not None)

        member = {key: None if s is None else node_id in s for key, s in lists.items()}
        nodes.append(Node(node_id, tuple(blocks), member["has_memory"], member["has_normal_memory"], member["online"]))
    nodes.sort(key=lambda n: n.id)
    return nodes


def block_node_map(nodes: list[Node]) -> dict[int, int]:
    return {b: n.id for n in nodes for b in n.blocks}
