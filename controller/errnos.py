"""Which failures of a ``memoryN/state`` write are worth another attempt.

Kernel terms (mm/memory_hotplug.c, drivers/base/memory.c); the table in
docs/controller.md is this one.
"""

from __future__ import annotations

import errno

# Linux's "Memory page has hardware error"; Python's errno module lacks it.
EHWPOISON = getattr(errno, "EHWPOISON", 133)

# Transient by nature: another attempt may succeed.
RETRYABLE = {
    errno.EBUSY: "offline_pages(): unmovable/isolation failures, a notifier veto, a concurrent user of the range",
    errno.EAGAIN: "temporary failure (e.g. migration or allocation), try again",
    errno.EINTR: 'offlining abandoned because the writer was signalled ("signal backoff")',
}
TIMEOUT = "timeout"  # our own: the writer child outlived its deadline and was killed

# Never retried: another attempt would fail the same way or do harm.
PERMANENT = {
    errno.EINVAL: "bad request for this block: wrong token, zone not allowed, block spans holes/zones/nodes "
    "(valid_zones none); or the block is already in that state (success, when state confirms it)",
    errno.EPERM: "operation not permitted (lockdown, missing CAP_SYS_ADMIN, immutable fixture)",
    errno.ENOENT: "the block or its state file is gone (hot-removed)",
    errno.EROFS: "sysfs mounted read-only (e.g. in a container)",
    errno.EACCES: "no write permission on the state file",
    EHWPOISON: "the block holds hardware-poisoned pages: it cannot be onlined or offlined safely",
}


def errno_name(code: int | None) -> str:
    """``16`` -> ``"EBUSY"``; ``0``/None -> ``""``."""
    if not code:
        return ""
    if code == EHWPOISON:
        return "EHWPOISON"
    return errno.errorcode.get(code, f"errno{code}")


def is_retryable(code: int | None, timed_out: bool = False) -> bool:
    """Retry EBUSY, EAGAIN, EINTR and timeouts; everything else is final.

    Errnos in neither table (ENOMEM, EIO, ...) are not retried either: an
    unknown failure is not assumed to be transient.
    """
    return timed_out or code in RETRYABLE
