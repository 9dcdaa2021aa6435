"""Secrets read from files, and the constant-time check of an Authorization header.

Secrets never come from the command line (it is world-readable in
``/proc/*/cmdline``).  A secret file is re-read when it changes (inode, size
or mtime), so a token can be rotated by an atomic rename without a restart;
if the new content is unreadable or invalid, the last good secret stays in
force and the problem is logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

# requests_rejected{reason} values for authentication.
AUTH_MISSING = "auth_missing"  # no Authorization header, or a scheme we do not accept
AUTH_FAILED = "auth_failed"  # credentials present but wrong or malformed


class SecretFileError(ValueError):
    pass


def _read_single_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(65537)
    except OSError as e:
        raise SecretFileError(f"cannot read secret file {path}: {e.strerror or e}") from None
    if len(data) > 65536:
        raise SecretFileError(f"secret file {path} is larger than 64 KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretFileError(f"secret file {path} is not UTF-8") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise SecretFileError(f"secret file {path} must hold exactly one non-empty line, found {len(lines)}")
    return lines[0]


def parse_bearer_token(path: str) -> bytes:
    token = _read_single_line(path)
    if any(c.isspace() for c in token):
        raise SecretFileError(f"bearer token in {path} contains whitespace")
    return token.encode("utf-8")


def parse_basic_auth(path: str) -> tuple[bytes, bytes]:
    line = _read_single_line(path)
    user, sep, password = line.partition(":")
    if not sep or not user or not password:
        raise SecretFileError(f"basic auth file {path} must hold one line 'user:password' (both non-empty)")
    return user.encode("utf-8"), password.encode("utf-8")


class SecretFile(Generic[T]):
    """A secret loaded from a file, reloaded when the file changes."""

    def __init__(self, path: str, parse: Callable[[str], T]) -> None:
        self.path = path
        self._parse = parse
        self._lock = threading.Lock()
        self._key = self._stat_key()
        self._value = parse(path)  # fail at start-up, loudly, on a bad file
        self._warn_if_readable_by_others()

    def _stat_key(self) -> tuple[int, int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _warn_if_readable_by_others(self) -> None:
        try:
            mode = os.stat(self.path).st_mode
        except OSError:
            return
        if mode & stat.S_IROTH:
            log.warning(
                "secret file %s is readable by every user (mode %o); chmod 600 it", self.path, stat.S_IMODE(mode)
            )

    def get(self) -> T:
        key = self._stat_key()
        if key is None or key == self._key:
            if key is None:
                log.warning("secret file %s has gone; keeping the secret last read", self.path)
            return self._value
        with self._lock:
            if key != self._key:
                try:
                    self._value = self._parse(self.path)
                    log.info("secret file %s changed; reloaded", self.path)
                except SecretFileError as e:
                    log.error("%s; keeping the secret last read", e)
                self._key = key
            return self._value


@dataclass
class Authenticator:
    """Checks ``Authorization`` headers against a bearer token and/or basic-auth credentials.

    With both configured, either is accepted.  Every comparison runs
    ``hmac.compare_digest`` on both user and password, without short-circuit.
    """

    bearer: SecretFile[bytes] | None = None
    basic: SecretFile[tuple[bytes, bytes]] | None = None

    @classmethod
    def from_files(cls, bearer_token_file: str | None, basic_auth_file: str | None) -> Authenticator:
        return cls(
            bearer=SecretFile(bearer_token_file, parse_bearer_token) if bearer_token_file else None,
            basic=SecretFile(basic_auth_file, parse_basic_auth) if basic_auth_file else None,
        )

    @property
    def enabled(self) -> bool:
        return self.bearer is not None or self.basic is not None

    @property
    def challenge(self) -> str:
        """The WWW-Authenticate value for a 401."""
        schemes = []
        if self.bearer is not None:
            schemes.append('Bearer realm="memhp"')
        if self.basic is not None:
            schemes.append('Basic realm="memhp", charset="UTF-8"')
        return ", ".join(schemes)

    def check(self, header: str | None) -> str | None:
        """None when the header authenticates the request, else the rejection reason."""
        if not self.enabled:
            return None
        if not header:
            return AUTH_MISSING
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        credentials = credentials.strip()
        if scheme == "bearer" and self.bearer is not None:
            expected = self.bearer.get()
            return None if hmac.compare_digest(credentials.encode("utf-8"), expected) else AUTH_FAILED
        if scheme == "basic" and self.basic is not None:
            user, password = self.basic.get()
            try:
                decoded = base64.b64decode(credentials.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                return AUTH_FAILED
            got_user, sep, got_password = decoded.partition(b":")
            ok_user = hmac.compare_digest(got_user, user)
            ok_password = hmac.compare_digest(got_password, password)
            return None if (sep and ok_user & ok_password) else AUTH_FAILED
        if scheme in ("bearer", "basic"):
            return AUTH_FAILED  # a scheme we know but was not configured: wrong credentials
        return AUTH_MISSING
