#!/usr/bin/env python3
"""Guest-side helper: pin a user page that lives in memory block N, so that
offlining N keeps retrying migration (the block reads ``going-offline``)
until the offlining process gets a fatal signal.

    python tests/vm/pin_pages.py BLOCK [--mib 64]

Allocates anonymous memory, finds (via /proc/self/pagemap, root only) the
pages that landed in the block's PFN range, and vmsplice(2)s one of them into
a pipe that is never read: the pipe holds a page reference, migration fails
with -EAGAIN forever.  Prints ``pinned pfn=0x...`` and then waits until
killed.  Standard library only (ctypes).
"""

import ctypes
import mmap
import os
import signal
import struct
import sys

MEMORY = "/sys/devices/system/memory"
PAGE = os.sysconf("SC_PAGE_SIZE")


class iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def main():
    block = int(sys.argv[1])
    mib = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--mib" else 64
    bs = int(open(f"{MEMORY}/block_size_bytes").read(), 16)
    lo, hi = block * bs // PAGE, (block + 1) * bs // PAGE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.vmsplice.argtypes = [ctypes.c_int, ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.c_uint]
    libc.vmsplice.restype = ctypes.c_ssize_t
    keep = []
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    for _ in range(16):
        size = mib << 20
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        keep.append(m)
        for off in range(0, size, PAGE):
            m[off] = 1
        base = ctypes.addressof(ctypes.c_char.from_buffer(m))
        entries = os.pread(pagemap, size // PAGE * 8, base // PAGE * 8)
        for i, (e,) in enumerate(struct.iter_unpack("<Q", entries)):
            pfn = e & ((1 << 55) - 1)
            if e >> 63 and lo <= pfn < hi:
                r, w = os.pipe()
                iov = iovec(base + i * PAGE, PAGE)
                if libc.vmsplice(w, ctypes.byref(iov), 1, 0) != PAGE:
                    err = ctypes.get_errno()
                    print(f"vmsplice failed: {os.strerror(err)}", flush=True)
                    return 1
                keep.append((r, w))
                print(f"pinned pfn={pfn:#x} block={block}", flush=True)
                while True:
                    signal.pause()
    print(f"no page landed in memory{block}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
