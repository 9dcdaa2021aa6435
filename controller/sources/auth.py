"""Moved to :mod:`memhp.web.auth` and :mod:`memhp.web.secrets` (the web layer both programs share)."""

from memhp.web.auth import AUTH_FAILED, AUTH_MISSING, Authenticator
from memhp.web.secrets import SecretFile, SecretFileError, parse_basic_auth, parse_bearer_token

__all__ = [
    "AUTH_FAILED",
    "AUTH_MISSING",
    "Authenticator",
    "SecretFile",
    "SecretFileError",
    "parse_basic_auth",
    "parse_bearer_token",
]
