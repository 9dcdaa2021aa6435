"""Reader for ``/sys/devices/system/memory``."""

from __future__ import annotations

import gc
import os
import re

from .fsread import ATTR_MAX, ParseErrors, decode_attr, parse_bool, parse_int, read_attr, read_bytes
from .model import BLOCK_STATES, MemoryBlock, MemoryConfig, parse_block_name

NODE_LINK = re.compile(r"node([0-9]+)\Z")
ZONE_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


def read_memory_config(memory_dir: str, errors: ParseErrors) -> MemoryConfig:
    size = parse_int(
        read_attr(os.path.join(memory_dir, "block_size_bytes"), errors, "memory/block_size_bytes"),
        errors,
        "memory/block_size_bytes",
        base=16,
    )
    if size == 0:
        errors.add("memory/block_size_bytes", "zero")
        size = None
    auto = read_attr(os.path.join(memory_dir, "auto_online_blocks"), errors, "memory/auto_online_blocks")
    crash = parse_bool(
        read_attr(os.path.join(memory_dir, "crash_hotplug"), errors, "memory/crash_hotplug"),
        errors,
        "memory/crash_hotplug",
    )
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
    # memory[0-9]+ only, not memory_failure
    ids = [i for i in map(parse_block_name, names) if i is not None]
    ids.sort()
    return ids


def _node_from_links(block_dir: str, root_fd: int) -> int | None:
    fd = os.open(block_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root_fd)
    try:
        names = os.listdir(fd)
    finally:
        os.close(fd)
    for name in names:
        m = NODE_LINK.match(name)
        if m:
            return int(m.group(1))
    return None


class _BlockReader:
    """Reads blocks relative to one open ``memory`` directory.

    The hot path of a scrape (100k blocks on large hosts): each attribute is
    opened by ``memoryN/attr`` relative to the memory directory (no per-block
    directory fd), and the handful of distinct ``state`` and ``valid_zones``
    values are parsed once each, keyed by their raw bytes.
    """

    def __init__(
        self,
        root_fd: int,
        errors: ParseErrors,
        node_of: dict[int, int] | None,
        details: bool,
        removable: bool,
        numa: bool = False,
    ) -> None:
        self.root_fd = root_fd
        # sysfs has node directories: a block without a node link is still
        # being added (see :meth:`read`).
        self.numa = numa
        self.errors = errors
        self.node_of = node_of
        self.details = details
        self.removable = removable
        self._states: dict[bytes, str] = {}
        self._zones: dict[bytes, tuple[str, ...]] = {}

    def _attr(self, prefix: str, name: str) -> bytes | None:
        return read_bytes(prefix + name, self.errors, "memoryN/" + name, dir_fd=self.root_fd)

    def _state(self, raw: bytes) -> str | None:
        state = self._states.get(raw)
        if state is None:
            state = parse_state(decode_attr(raw, self.errors, "memoryN/state"), self.errors)
            if state is not None:
                self._states[raw] = state
        return state

    def _valid_zones(self, raw: bytes | None) -> tuple[str, ...] | None:
        if raw is None:
            return None
        zones = self._zones.get(raw)
        if zones is None:
            zones = parse_valid_zones(decode_attr(raw, self.errors, "memoryN/valid_zones"), self.errors)
            if zones is not None:
                self._zones[raw] = zones
        return zones

    def _text(self, prefix: str, name: str) -> str | None:
        return decode_attr(self._attr(prefix, name), self.errors, "memoryN/" + name)

    def read(self, block_id: int) -> MemoryBlock | None:
        prefix = f"memory{block_id}/"
        raw_state = self._attr(prefix, "state")
        if raw_state is None:
            if not self._still_there(block_id):
                return None  # removed since listdir: a hot-remove race, not an error
            state = None
        else:
            state = self._state(raw_state)
        node = self.node_of.get(block_id) if self.node_of is not None else None
        if node is None:
            try:
                node = _node_from_links(prefix, self.root_fd)
            except OSError:
                if not self._still_there(block_id):
                    return None
        # A hot-added block exists (and its "add" uevent is out) before the
        # kernel sets its node and links it; until then its nid is -1, and
        # reading valid_zones dereferences NODE_DATA(-1): a kernel oops
        # (Debian 6.1, seen in the QEMU test bed). No link, no valid_zones.
        zones = None
        if node is not None or not self.numa:
            zones = self._valid_zones(self._attr(prefix, "valid_zones"))
        removable = None
        if self.removable:
            removable = parse_bool(self._text(prefix, "removable"), self.errors, "memoryN/removable")
        online = phys_index = phys_device = None
        if self.details:
            # Reading ``online`` (like ``uevent``) of a block that is going
            # offline waits on the device lock until the offline ends, which
            # can be for ever: derive nothing, read nothing.
            if state != "going-offline":
                online = parse_bool(self._text(prefix, "online"), self.errors, "memoryN/online")
            phys_index = parse_int(self._text(prefix, "phys_index"), self.errors, "memoryN/phys_index", base=16)
            phys_device = parse_int(self._text(prefix, "phys_device"), self.errors, "memoryN/phys_device")
        return MemoryBlock(block_id, state, removable, zones, node, online, phys_index, phys_device)

    def _still_there(self, block_id: int) -> bool:
        try:
            os.stat(f"memory{block_id}", dir_fd=self.root_fd)
            return True
        except OSError:
            return False


def has_node_dirs(memory_dir: str) -> bool:
    """Whether sysfs has ``devices/system/node`` next to ``devices/system/memory`` (CONFIG_NUMA)."""
    return os.path.isdir(os.path.join(os.path.dirname(os.path.normpath(memory_dir)), "node"))


def _open_dir(memory_dir: str, errors: ParseErrors) -> int | None:
    try:
        return os.open(memory_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        errors.add("memory", f"open: {os.strerror(e.errno or 0)}")
        return None


def read_blocks(
    memory_dir: str,
    errors: ParseErrors,
    node_of: dict[int, int] | None = None,
    *,
    details: bool = False,
    removable_limit: int | None = None,
) -> list[MemoryBlock]:
    """Every ``memory[0-9]+`` block, sorted by id.

    ``node_of`` maps block id to node, taken from the node directories (one
    listdir per node instead of one per block); blocks it does not know are
    resolved from their own ``nodeN`` link.  A block removed while we read it
    is skipped: hot-remove races are normal, not errors.  With more blocks
    than ``removable_limit``, ``removable`` is not read (it is None): only
    per-block output uses it.
    """
    root_fd = _open_dir(memory_dir, errors)
    if root_fd is None:
        return []
    try:
        ids = list_block_ids(memory_dir, errors)
        want_removable = removable_limit is None or len(ids) <= removable_limit
        reader = _BlockReader(root_fd, errors, node_of, details, want_removable, has_node_dirs(memory_dir))
        # Up to 100k acyclic objects in a row: the cyclic collector would only
        # rescan them again and again while the list grows.
        gc_was_on = gc.isenabled()
        gc.disable()
        try:
            if details or want_removable or node_of is None:
                blocks = [reader.read(i) for i in ids]
            else:
                blocks = _read_fast(reader, ids, node_of)
        finally:
            if gc_was_on:
                gc.enable()
        return [b for b in blocks if b is not None]
    finally:
        os.close(root_fd)


def _read_fast(reader: _BlockReader, ids: list[int], node_of: dict[int, int]) -> list[MemoryBlock | None]:
    """The scrape's common case at scale, inlined: both files read cleanly and
    hold values already parsed once.  Anything else (an error, a value not seen
    yet, a block without a node) goes through :meth:`_BlockReader.read`, which
    owns every error rule, so the two cannot disagree on what they return."""
    root_fd, states, zones = reader.root_fd, reader._states, reader._zones
    flags, limit = os.O_RDONLY | os.O_CLOEXEC, ATTR_MAX + 1
    _open, _read, _close = os.open, os.read, os.close
    out: list[MemoryBlock | None] = []
    append = out.append
    for block_id in ids:
        node = node_of.get(block_id)
        if node is None:
            # Not linked to a node (yet): read carefully (see _BlockReader.read).
            append(reader.read(block_id))
            continue
        prefix = f"memory{block_id}/"
        try:
            fd = _open(prefix + "state", flags, dir_fd=root_fd)
            try:
                raw_state = _read(fd, limit)
            finally:
                _close(fd)
            fd = _open(prefix + "valid_zones", flags, dir_fd=root_fd)
            try:
                raw_zones = _read(fd, limit)
            finally:
                _close(fd)
        except OSError:
            append(reader.read(block_id))
            continue
        state = states.get(raw_state)
        zone_list = zones.get(raw_zones)
        if state is None or zone_list is None:
            append(reader.read(block_id))
            continue
        append(MemoryBlock(block_id, state, None, zone_list, node))
    return out


def read_block(memory_dir: str, block_id: int, errors: ParseErrors) -> MemoryBlock | None:
    """One block, read exactly as :func:`read_blocks` reads it; None if absent."""
    root_fd = _open_dir(memory_dir, errors)
    if root_fd is None:
        return None
    try:
        return _BlockReader(root_fd, errors, None, False, True, has_node_dirs(memory_dir)).read(block_id)
    finally:
        os.close(root_fd)
