"""Checking an ``Authorization`` header: bearer token and basic auth from files,
and the bcrypt ``basic_auth_users`` of a web config file.

Header values arrive as the bytes the client sent (HTTP carries bytes; the
server hands them on decoded as Latin-1, which is lossless), so a token or
password with non-ASCII characters is compared as its UTF-8 bytes.
Comparisons of plain secrets run ``hmac.compare_digest`` on user and password
without short-circuit.

bcrypt checks run for unknown users too, against a hash of the configured
users' cost, so that the time of an answer does not tell which users exist.
A success is cached (keyed by user, password and hash, like exporter-toolkit's
cache), so a scraper with the right password pays bcrypt once.  At most
:func:`bcrypt_parallelism` checks run at once (one per whole CPU of the
process's CPU quota); a request that finds them all busy is refused at once
(``auth_busy``) instead of waiting, so wrong passwords can neither take the
CPU nor hold connections.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import math
import os
import re
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from .secrets import SecretFile, parse_basic_auth, parse_bearer_token

# requests_rejected{reason} values for authentication.
AUTH_MISSING = "auth_missing"  # no Authorization header, or a scheme we do not accept
AUTH_FAILED = "auth_failed"  # credentials present but wrong or malformed
AUTH_BUSY = "auth_busy"  # a password to check and every bcrypt slot busy: 503, not judged

BCRYPT_MAX_PARALLEL = 4  # even without a quota: wrong passwords must not take a big host's cores
_CACHE_SIZE = 64
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
_COST = re.compile(rb"\$2[abxy]?\$([0-9]{2})\$")
# For an unknown user when no user is configured (a reload emptied the list): cost 10, as exporter-toolkit's.
_FALLBACK_DUMMY = b"$2b$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"


def _read_words(path: Path) -> list[str] | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").split()
    except OSError:
        return None


def _own_cgroup_dirs(root: Path, proc_self_cgroup: Path, controller: str | None) -> list[Path]:
    """The process's cgroup directory and its ancestors under ``root`` (a quota anywhere above applies)."""
    try:
        lines = proc_self_cgroup.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    relative = ""
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if (controller is None and controllers == "") or (controller and controller in controllers.split(",")):
            relative = path.strip("/")
            break
    here = root / relative if relative else root
    dirs = [here, *here.parents]
    return [d for d in dirs if d == root or root in d.parents]


def _quota_v2(directory: Path) -> float | None:
    words = _read_words(directory / "cpu.max")
    if not words or words[0] == "max":
        return None
    try:
        quota, period = int(words[0]), int(words[1]) if len(words) > 1 else 100_000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _quota_v1(directory: Path) -> float | None:
    quota, period = _read_words(directory / "cpu.cfs_quota_us"), _read_words(directory / "cpu.cfs_period_us")
    try:
        q, p = int(quota[0]), int(period[0])  # type: ignore[index]
    except (TypeError, IndexError, ValueError):
        return None
    return q / p if q > 0 and p > 0 else None


def cpu_quota(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """CPUs the process's cgroup may use (quota / period, smallest along the hierarchy); None if unlimited.

    cgroup v2 (``cpu.max``) first, then v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).
    """
    quotas = [_quota_v2(d) for d in _own_cgroup_dirs(root, proc_self_cgroup, None)]
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if (root / v1).is_dir():
            quotas += [_quota_v1(d) for d in _own_cgroup_dirs(root / v1, proc_self_cgroup, "cpu")]
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bcrypt_parallelism(root: Path = CGROUP_ROOT, proc_self_cgroup: Path = PROC_SELF_CGROUP) -> int:
    """bcrypt checks at once: one per whole CPU of the quota (250m: 1), at most half the usable CPUs and
    :data:`BCRYPT_MAX_PARALLEL`; at least 1.  Threads beyond the quota would only be throttled."""
    limit = max(1, _usable_cpus() // 2)
    quota = cpu_quota(root, proc_self_cgroup)
    if quota is not None:
        limit = min(limit, max(1, math.floor(quota)))
    return max(1, min(limit, BCRYPT_MAX_PARALLEL))


@functools.cache
def _default_parallelism() -> int:
    return bcrypt_parallelism()


def bcrypt_cost(hashed: bytes) -> int | None:
    match = _COST.match(hashed)
    return int(match.group(1)) if match else None


def dummy_hash(hashes: list[bytes]) -> bytes:
    """A configured hash of the most common cost (the higher on a tie): checked for an unknown user,
    with the result thrown away, it takes as long as a known user's wrong password."""
    by_cost = {c: h for h in hashes if (c := bcrypt_cost(h)) is not None}
    if not by_cost:
        return _FALLBACK_DUMMY
    counts = Counter(c for h in hashes if (c := bcrypt_cost(h)) is not None)
    cost = max(counts, key=lambda c: (counts[c], c))
    return by_cost[cost]


def _cache_key(user: bytes, password: bytes, hashed: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (user, password, hashed):  # length-prefixed: no two (user, password) pairs give one key
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.digest()


class _BcryptChecker:
    def __init__(self, parallel: int | None = None) -> None:
        self.parallel = parallel or _default_parallelism()
        self._slots = threading.BoundedSemaphore(self.parallel)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, user: bytes, password: bytes, hashed: bytes | None, dummy: Callable[[], bytes]) -> str | None:
        """None when the password is right; AUTH_FAILED, or AUTH_BUSY when no check could run now."""
        key = _cache_key(user, password, hashed or b"")
        with self._lock:
            if hashed is not None and key in self._ok:
                self._ok.move_to_end(key)
                return None
        if not self._slots.acquire(blocking=False):
            return AUTH_BUSY
        try:
            ok = bcrypt.checkpw(password, hashed or dummy()) and hashed is not None
        except ValueError:
            ok = False
        finally:
            self._slots.release()
        if not ok:
            return AUTH_FAILED
        with self._lock:
            self._ok[key] = None
            while len(self._ok) > _CACHE_SIZE:
                self._ok.popitem(last=False)
        return None


def _raw(header: str) -> bytes:
    try:
        return header.encode("latin-1")
    except UnicodeEncodeError:  # not from the wire: a caller's str, take it as UTF-8
        return header.encode("utf-8", "surrogateescape")


@dataclass
class Authenticator:
    """Accepts a request whose ``Authorization`` matches any configured credential."""

    bearer: SecretFile[bytes] | None = None
    basic: SecretFile[tuple[bytes, bytes]] | None = None
    # user -> bcrypt hash, read anew for each request (the web config file reloads)
    users: Callable[[], Mapping[str, bytes]] | None = None
    _bcrypt: _BcryptChecker = field(default_factory=_BcryptChecker, repr=False)
    _dummy_for: tuple[Mapping[str, bytes], bytes] | None = field(default=None, repr=False)

    @classmethod
    def from_files(
        cls,
        bearer_token_file: str | None,
        basic_auth_file: str | None,
        users: Callable[[], Mapping[str, bytes]] | None = None,
    ) -> Authenticator:
        return cls(
            bearer=SecretFile(bearer_token_file, parse_bearer_token) if bearer_token_file else None,
            basic=SecretFile(basic_auth_file, parse_basic_auth) if basic_auth_file else None,
            users=users,
        )

    @property
    def enabled(self) -> bool:
        return self.bearer is not None or self.basic is not None or self.users is not None

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value for a 401."""
        schemes = []
        if self.bearer is not None:
            schemes.append('Bearer realm="memhp"')
        if self.basic is not None or self.users is not None:
            schemes.append('Basic realm="memhp", charset="UTF-8"')
        return ", ".join(schemes)

    def check(self, header: str | None) -> str | None:
        """None when the header authenticates the request, else the rejection reason."""
        if not self.enabled:
            return None
        if not header:
            return AUTH_MISSING
        raw = _raw(header).strip()
        scheme, _, credentials = raw.partition(b" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == b"bearer" and self.bearer is not None:
            return None if hmac.compare_digest(credentials, self.bearer.get()) else AUTH_FAILED
        if scheme == b"basic" and (self.basic is not None or self.users is not None):
            try:
                decoded = base64.b64decode(credentials, validate=True)
            except (binascii.Error, ValueError):
                return AUTH_FAILED
            got_user, sep, got_password = decoded.partition(b":")
            if not sep:
                return AUTH_FAILED
            if self.basic is not None:
                user, password = self.basic.get()
                ok_user = hmac.compare_digest(got_user, user)
                ok_password = hmac.compare_digest(got_password, password)
                if ok_user & ok_password:
                    return None
            if self.users is not None:
                return self._check_user(got_user, got_password)
            return AUTH_FAILED
        if scheme in (b"bearer", b"basic"):
            return AUTH_FAILED  # a scheme we know but was not configured: wrong credentials
        return AUTH_MISSING

    def _check_user(self, user: bytes, password: bytes) -> str | None:
        users = self.users() if self.users is not None else {}
        try:
            hashed = users.get(user.decode("utf-8"))
        except UnicodeDecodeError:
            hashed = None
        return self._bcrypt.check(user, password, hashed, lambda: self._dummy(users))

    def _dummy(self, users: Mapping[str, bytes]) -> bytes:
        """The hash an unknown user is checked against, worked out again only when the users change."""
        memo = self._dummy_for
        if memo is None or memo[0] is not users:
            memo = (users, dummy_hash(list(users.values())))
            self._dummy_for = memo
        return memo[1]
