"""Whether the roots the exporter reads are what they claim to be.

``--path.sysfs /nonexistent`` (a typo in a container mount) reads as a
machine with no memory blocks; the collectors alone cannot tell that from a
real one.  Each source is checked with a few ``stat`` calls and an
``open``, and given one reason:

* ``ok``;
* ``missing``: the path does not exist;
* ``unreadable``: it exists but cannot be read (permissions, a directory
  where a file should be, a FIFO, ...);
* ``not_sysfs``: a directory without ``devices/system``, so no sysfs at all;
* ``no_memory_hotplug``: a sysfs whose kernel has no
  ``devices/system/memory`` (built without ``CONFIG_MEMORY_HOTPLUG``).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from .paths import Paths

OK = "ok"
MISSING = "missing"
UNREADABLE = "unreadable"
NOT_SYSFS = "not_sysfs"
NO_MEMORY_HOTPLUG = "no_memory_hotplug"
REASONS = (OK, MISSING, UNREADABLE, NOT_SYSFS, NO_MEMORY_HOTPLUG)

# The sources the collectors name in their ``sources``.
SYSFS_MEMORY = "sysfs_memory"
ZONEINFO = "zoneinfo"
MEMINFO = "meminfo"
SOURCES = (SYSFS_MEMORY, ZONEINFO, MEMINFO)

_ABSENT = (errno.ENOENT, errno.ENOTDIR)


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    path: str  # what the operator gave, joined with the part memhp reads
    reason: str
    detail: str  # one line for the log

    @property
    def available(self) -> bool:
        return self.reason == OK


def _stat(path: str) -> os.stat_result | OSError:
    try:
        return os.stat(path)
    except OSError as e:
        return e


def _absent(result: os.stat_result | OSError) -> bool:
    return isinstance(result, OSError) and result.errno in _ABSENT


def _problem(source: str, path: str, result: os.stat_result | OSError, kind: str) -> SourceStatus | None:
    """``missing``/``unreadable`` for a path that is not a usable ``kind`` ("dir" or "file"); None if it is."""
    if _absent(result):
        return SourceStatus(source, path, MISSING, f"{path} does not exist")
    if isinstance(result, OSError):
        return SourceStatus(source, path, UNREADABLE, f"{path}: {os.strerror(result.errno or 0)}")
    want_dir = kind == "dir"
    if want_dir and not stat.S_ISDIR(result.st_mode):
        return SourceStatus(source, path, UNREADABLE, f"{path} is not a directory")
    if not want_dir and not stat.S_ISREG(result.st_mode):
        return SourceStatus(source, path, UNREADABLE, f"{path} is not a regular file")
    return None


def check_sysfs(paths: Paths) -> SourceStatus:
    root = paths.sysfs
    memory = paths.memory
    root_stat = _stat(root)
    if isinstance(root_stat, os.stat_result) and not stat.S_ISDIR(root_stat.st_mode):
        return SourceStatus(SYSFS_MEMORY, memory, NOT_SYSFS, f"--path.sysfs {root} is not a directory")
    problem = _problem(SYSFS_MEMORY, memory, root_stat, "dir")
    if problem is not None:
        what = "does not exist" if problem.reason == MISSING else problem.detail.removeprefix(f"{memory}: ")
        return SourceStatus(SYSFS_MEMORY, memory, problem.reason, f"--path.sysfs {root}: {what}")
    if _absent(_stat(os.path.join(root, "devices", "system"))):
        return SourceStatus(
            SYSFS_MEMORY, memory, NOT_SYSFS, f"--path.sysfs {root} is not a sysfs (no devices/system in it)"
        )
    problem = _problem(SYSFS_MEMORY, memory, _stat(memory), "dir")
    if problem is not None and problem.reason == MISSING:
        return SourceStatus(
            SYSFS_MEMORY,
            memory,
            NO_MEMORY_HOTPLUG,
            f"{memory} does not exist: this kernel has no memory hotplug (CONFIG_MEMORY_HOTPLUG)",
        )
    if problem is not None:
        return problem
    try:
        with os.scandir(memory) as entries:  # the first entry proves it readable; 4,096 blocks need not be listed
            next(entries, None)
    except OSError as e:
        return SourceStatus(SYSFS_MEMORY, memory, UNREADABLE, f"{memory}: {os.strerror(e.errno or 0)}")
    return SourceStatus(SYSFS_MEMORY, memory, OK, f"{memory} is readable")


def check_proc_file(source: str, path: str, procfs: str) -> SourceStatus:
    problem = _problem(source, path, _stat(path), "file")
    if problem is not None:
        if problem.reason == MISSING and _absent(_stat(procfs)):
            return SourceStatus(source, path, MISSING, f"--path.procfs {procfs} does not exist")
        return problem
    try:
        # Opening proves permission; reading would make the kernel generate the file (zoneinfo: ~1 ms).
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK))
    except OSError as e:
        return SourceStatus(source, path, UNREADABLE, f"{path}: {os.strerror(e.errno or 0)}")
    return SourceStatus(source, path, OK, f"{path} is readable")


def check_sources(paths: Paths, wanted: frozenset[str] | set[str] | tuple[str, ...] = SOURCES) -> list[SourceStatus]:
    """The status of each source in ``wanted`` (in :data:`SOURCES` order)."""
    checks = {
        SYSFS_MEMORY: lambda: check_sysfs(paths),
        ZONEINFO: lambda: check_proc_file(ZONEINFO, paths.zoneinfo, paths.procfs),
        MEMINFO: lambda: check_proc_file(MEMINFO, paths.meminfo, paths.procfs),
    }
    return [checks[s]() for s in SOURCES if s in wanted]
