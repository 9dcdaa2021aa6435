"""Checking an ``Authorization`` header: bearer token and basic auth from files,
and the bcrypt ``basic_auth_users`` of a web config file.

Header values arrive as the bytes the client sent (HTTP carries bytes; the
server hands them on decoded as Latin-1, which is lossless), so a token or
password with non-ASCII characters is compared as its UTF-8 bytes.
Comparisons of plain secrets run ``hmac.compare_digest`` on user and password
without short-circuit.  bcrypt checks run for unknown users too (against a
fixed hash), are cached on success like exporter-toolkit's, and at most
:data:`BCRYPT_PARALLEL` run at once, so wrong passwords cannot take every core.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import bcrypt

from .secrets import SecretFile, parse_basic_auth, parse_bearer_token

# requests_rejected{reason} values for authentication.
AUTH_MISSING = "auth_missing"  # no Authorization header, or a scheme we do not accept
AUTH_FAILED = "auth_failed"  # credentials present but wrong or malformed

BCRYPT_PARALLEL = 2
_BCRYPT_WAIT = 1.0  # a request waiting longer for a bcrypt slot is refused (401)
_CACHE_SIZE = 64
_dummy_hash: list[bytes] = []


def _dummy() -> bytes:
    """Checked against when the user is unknown, so that the answer takes as long (made on first use)."""
    if not _dummy_hash:
        _dummy_hash.append(bcrypt.hashpw(b"memhp-no-such-user", bcrypt.gensalt(rounds=10)))
    return _dummy_hash[0]


class _BcryptChecker:
    def __init__(self) -> None:
        self._slots = threading.BoundedSemaphore(BCRYPT_PARALLEL)
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, user: bytes, password: bytes, hashed: bytes | None) -> bool:
        key = hashlib.sha256(b"\0".join((user, password, hashed or b""))).digest()
        with self._lock:
            if hashed is not None and key in self._ok:
                self._ok.move_to_end(key)
                return True
        if not self._slots.acquire(timeout=_BCRYPT_WAIT):
            return False
        try:
            ok = bcrypt.checkpw(password, hashed or _dummy()) and hashed is not None
        except ValueError:
            ok = False
        finally:
            self._slots.release()
        if ok:
            with self._lock:
                self._ok[key] = None
                while len(self._ok) > _CACHE_SIZE:
                    self._ok.popitem(last=False)
        return ok


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
                try:
                    hashed = self.users().get(got_user.decode("utf-8"))
                except UnicodeDecodeError:
                    hashed = None
                if self._bcrypt.check(got_user, got_password, hashed):
                    return None
            return AUTH_FAILED
        if scheme in (b"bearer", b"basic"):
            return AUTH_FAILED  # a scheme we know but was not configured: wrong credentials
        return AUTH_MISSING
