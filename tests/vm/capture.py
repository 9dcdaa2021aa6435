#!/usr/bin/env python3
"""Snapshot the memory-hotplug subset of sysfs/procfs into a fixture archive.

Runs inside a test-bed guest (standard library only):

    python tests/vm/capture.py --out /run/memhp/results/NAME.tar.gz [--meta JSON]

The archive (gzip tar, symlinks kept, sorted, fixed mtime) unpacks to a tree
that is a valid ``lsmem --sysroot DIR`` and a valid exporter root
(``--path.sysfs DIR/sys --path.procfs DIR/proc``):

  sys/devices/system/memory/          block_size_bytes, auto_online_blocks,
                                      crash_hotplug, uevent; write-only files
                                      (probe, soft/hard_offline_page) as empty
                                      markers; per memoryN: state, online,
                                      phys_index, phys_device, removable,
                                      valid_zones, uevent and the nodeN links
  sys/devices/system/node/            has_*, online, possible; per nodeN:
                                      meminfo, cpulist, cpumap, distance,
                                      numastat and the memoryN links
  sys/module/memory_hotplug/parameters/*
  proc/{zoneinfo,meminfo,version,cmdline}
  lsmem.json                          lsmem -J -a -o RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES
  capture.json                        how and where it was captured

Files that vanish or cannot be read while capturing (hot-remove races) are
recorded in capture.json's ``unreadable`` list and left out.  A block's
``online`` and ``uevent`` are not read while the block is ``going-offline``:
their show functions take the device lock that the offlining writer holds
(checked on Debian's 6.1), so the read would block until the offline ends;
they are listed under ``skipped`` instead.
"""

import argparse
import io
import json
import os
import re
import stat
import subprocess
import sys
import tarfile
import time

LSMEM_COLUMNS = "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES"
MTIME = 0  # reproducible archives

MEMORY = "sys/devices/system/memory"
NODE = "sys/devices/system/node"
PARAMS = "sys/module/memory_hotplug/parameters"
BLOCK_ATTRS = ("state", "online", "phys_index", "phys_device", "removable", "valid_zones", "uevent")
DEVICE_LOCKED = ("online", "uevent")  # *_show() takes device_lock()
MEMORY_TOP = ("block_size_bytes", "auto_online_blocks", "crash_hotplug", "uevent")
NODE_ATTRS = ("meminfo", "cpulist", "cpumap", "distance", "numastat")
PROC_FILES = ("zoneinfo", "meminfo", "version", "cmdline")


class Capture:
    def __init__(self, root="/"):
        self.root = root
        self.entries = {}  # archive path -> ("dir"|"file"|"link", payload, mode)
        self.unreadable = []
        self.skipped = []

    def _host(self, rel):
        return os.path.join(self.root, rel)

    def _dirs(self, rel):
        parts = rel.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            self.entries.setdefault(d, ("dir", None, 0o755))

    def file(self, rel, marker_if_writeonly=False):
        path = self._host(rel)
        try:
            st = os.stat(path)
        except OSError:
            return False
        mode = stat.S_IMODE(st.st_mode)
        if not mode & 0o444:
            if marker_if_writeonly:
                self._dirs(rel)
                self.entries[rel] = ("file", b"", mode)
                return True
            return False
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            self.unreadable.append(f"{rel}: {e.strerror}")
            return False
        self._dirs(rel)
        self.entries[rel] = ("file", data, mode)
        return True

    def link(self, rel):
        try:
            target = os.readlink(self._host(rel))
        except OSError:
            return False
        self._dirs(rel)
        self.entries[rel] = ("link", target, 0o777)
        return True

    def listdir(self, rel):
        try:
            return sorted(os.listdir(self._host(rel)))
        except OSError:
            return []

    def add(self, name, data: bytes, mode=0o644):
        self._dirs(name)
        self.entries[name] = ("file", data, mode)

    def collect(self):
        self._collect_memory()
        self._collect_nodes()
        # module parameters
        for e in self.listdir(PARAMS):
            self.file(f"{PARAMS}/{e}")
        for e in PROC_FILES:
            self.file(f"proc/{e}")

    def _collect_memory(self):
        for e in self.listdir(MEMORY):
            rel = f"{MEMORY}/{e}"
            if e in MEMORY_TOP:
                self.file(rel)
            elif re.fullmatch(r"memory\d+", e):
                self.entries[rel] = ("dir", None, 0o755)
                for a in BLOCK_ATTRS:
                    if a in DEVICE_LOCKED and self.entries.get(f"{rel}/state", ("", b""))[1] == b"going-offline\n":
                        # Reading these takes the device lock, which the
                        # offlining writer holds: the read would block until
                        # the offline ends.  Leave them out, say so.
                        self.skipped.append(f"{rel}/{a}: device locked (going-offline)")
                        continue
                    self.file(f"{rel}/{a}")
                for sub in self.listdir(rel):
                    if re.fullmatch(r"node\d+", sub):
                        self.link(f"{rel}/{sub}")
            elif os.path.isfile(self._host(rel)) and not os.path.islink(self._host(rel)):
                self.file(rel, marker_if_writeonly=True)  # probe, *_offline_page

    def _collect_nodes(self):
        for e in self.listdir(NODE):
            rel = f"{NODE}/{e}"
            if re.fullmatch(r"node\d+", e):
                self.entries[rel] = ("dir", None, 0o755)
                for a in NODE_ATTRS:
                    self.file(f"{rel}/{a}")
                for sub in self.listdir(rel):
                    if re.fullmatch(r"memory\d+", sub):
                        self.link(f"{rel}/{sub}")
            elif e != "uevent" and os.path.isfile(self._host(rel)):
                self.file(rel)
        self.file(f"{NODE}/uevent")

    def write(self, out):
        tmp = out + ".tmp"
        with open(tmp, "wb") as raw:
            # gzip header mtime 0 too, so the same tree gives the same bytes
            import gzip

            with gzip.GzipFile(fileobj=raw, mode="wb", mtime=MTIME, filename="") as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    for name in sorted(self.entries):
                        kind, payload, mode = self.entries[name]
                        ti = tarfile.TarInfo(name)
                        ti.mtime, ti.mode, ti.uid, ti.gid = MTIME, mode, 0, 0
                        ti.uname = ti.gname = "root"
                        if kind == "dir":
                            ti.type = tarfile.DIRTYPE
                            tar.addfile(ti)
                        elif kind == "link":
                            ti.type, ti.linkname = tarfile.SYMTYPE, payload
                            tar.addfile(ti)
                        else:
                            ti.size = len(payload)
                            tar.addfile(ti, io.BytesIO(payload))
        os.replace(tmp, out)


def lsmem_json(root="/"):
    argv = ["lsmem", "-J", "-a", "-o", LSMEM_COLUMNS]
    if root != "/":
        argv += ["--sysroot", root]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"capture: {' '.join(argv)} failed: {p.stderr}")
    return p.stdout


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="archive to write (.tar.gz)")
    ap.add_argument("--root", default="/", help="root to read from (default /)")
    ap.add_argument("--meta", default="{}", help="JSON merged into capture.json")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    c = Capture(args.root)
    listing = lsmem_json(args.root)
    c.collect()
    listing_after = lsmem_json(args.root)
    meta = {
        "tool": "tests/vm/capture.py",
        "captured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "uname": " ".join(os.uname()),
        "lsmem_columns": LSMEM_COLUMNS,
        "lsmem_stable": listing == listing_after,
        "unreadable": c.unreadable,
        "skipped": c.skipped,
        **json.loads(args.meta),
    }
    c.add("lsmem.json", listing_after.encode())
    c.add("capture.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    c.write(args.out)
    print(
        json.dumps(
            {
                "out": args.out,
                "entries": len(c.entries),
                "seconds": round(time.monotonic() - t0, 3),
                "lsmem_stable": meta["lsmem_stable"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
