"""Reader for ``/sys/devices/system/memory``."""

from __future__ import annotations

import os
import re

from .fsread import ParseErrors, parse_bool, parse_int, read_attr
from .model import BLOCK_STATES, MemoryBlock, MemoryConfig

BLOCK_DIR = re.compile(r"memory([0-9]+)\Z")
NODE_LINK = re.compile(r"node([0-9]+)\Z")
ZONE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


def read_memory_config(memory_dir: str, errors: ParseErrors) -> MemoryConfig:
    size = parse_int(read_attr(os.path.join(memory_dir, "block_size_bytes"), errors, "memory/block_size_bytes"),
                     errors, "memory/block_size_bytes", base=16)
    if size == 0:
        errors.add("memory/block_size_bytes", "zero")
        size = None
    auto = read_attr(os.path.join(memory_dir, "auto_online_blocks"), errors, "memory/auto_online_blocks")
    crash = parse_bool(read_attr(os.path.join(memory_dir, "crash_hotplug"), errors, "memory/crash_hotplug"),
                       errors, "memory/crash_hotplug")
    # probe is write-only (mode 0200): presence, not contents, is the signal.
    probe = os.path.lexists(os.path.join(memory_dir, "probe"))
    return MemoryConfig(size, auto or None, crash, probe)


def parse_state(text: str | None, errors: ParseErrors) -> str | None:
    if text is None:
        return None
    if text not in BLOCK_STATES:
        errors.add("memoryN/state", f"unknown state {text[:40]!r}")
        return None
    return text


def parse_valid_zones(text: str | None, errors: ParseErrors) -> tuple[str, ...] | None:
    if text is None:
        return None
    zones = tuple(text.split())
    if not zones or not all(ZONE_TOKEN.match(z) for z in zones):
        errors.add("memoryN/valid_zones", f"not a zone list: {text[:40]!r}")
        return None
    return zones


def list_block_ids(memory_dir: str, errors: ParseErrors) -> list[int]:
    try:
        names = os.listdir(memory_dir)
    except FileNotFoundError:
        return []
    except OSError as e:
        errors.add("memory", f"listdir: {os.strerror(e.errno or 0)}")
        return []
    ids = []
    for name in names:
        m = BLOCK_DIR.match(name)
        if m:
            ids.append(int(m.group(1)))
    ids.sort()
    return ids


def _node_from_links(dir_fd: int) -> int | None:
    for name in os.listdir(dir_fd):
        m = NODE_LINK.match(name)
        if m:
            return int(m.group(1))
    return None


def read_blocks(
    memory_dir: str,
    errors: ParseErrors,
    node_of: dict[int, int] | None = None,
    *,
    details: bool = False,
) -> list[MemoryBlock]:
    """Every ``memory[0-9]+`` block, sorted by id.

    ``node_of`` maps block id to node, taken from the node directories (one
    listdir per node instead of one per block); blocks it does not know are
    resolved from their own ``nodeN`` link.  A block removed while we read it
    is skipped: hot-remove races are normal, not errors.
    """
    try:
        root_fd = os.open(memory_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as e:
        errors.add("memory", f"open: {os.strerror(e.errno or 0)}")
        return []
    blocks: list[MemoryBlock] = []
    try:
        for block_id in list_block_ids(memory_dir, errors):
            try:
                fd = os.open(f"memory{block_id}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
            except FileNotFoundError:
                continue  # removed since listdir
            except OSError as e:
                errors.add("memoryN", f"open: {os.strerror(e.errno or 0)}")
                continue
            try:
                block = _read_block(block_id, fd, root_fd, errors, node_of, details)
            finally:
                os.close(fd)
            if block is not None:
                blocks.append(block)
    finally:
        os.close(root_fd)
    return blocks


def _read_block(block_id: int, fd: int, root_fd: int, errors: ParseErrors,
                node_of: dict[int, int] | None, details: bool) -> MemoryBlock | None:
    raw_state = read_attr("state", errors, "memoryN/state", dir_fd=fd)
    if raw_state is None and not _still_there(block_id, root_fd):
        return None
    state = parse_state(raw_state, errors)
    zones = parse_valid_zones(read_attr("valid_zones", errors, "memoryN/valid_zones", dir_fd=fd), errors)
    removable = parse_bool(read_attr("removable", errors, "memoryN/removable", dir_fd=fd), errors, "memoryN/removable")
    node = node_of.get(block_id) if node_of is not None else None
    if node is None:
        try:
            node = _node_from_links(fd)
        except OSError:
            if not _still_there(block_id, root_fd):
                return None
    online = phys_index = phys_device = None
    if details:
        online = parse_bool(read_attr("online", errors, "memoryN/online", dir_fd=fd), errors, "memoryN/online")
        phys_index = parse_int(read_attr("phys_index", errors, "memoryN/phys_index", dir_fd=fd),
                               errors, "memoryN/phys_index", base=16)
        phys_device = parse_int(read_attr("phys_device", errors, "memoryN/phys_device", dir_fd=fd),
                                errors, "memoryN/phys_device")
    return MemoryBlock(block_id, state, removable, zones, node, online, phys_index, phys_device)


def _still_there(block_id: int, root_fd: int) -> bool:
    # An fd on a removed sysfs directory stays valid, so ask the parent again.
    try:
        os.stat(f"memory{block_id}", dir_fd=root_fd)
        return True
    except OSError:
        return False
