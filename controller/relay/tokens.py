"""Per-node controller tokens: ``hex(HMAC-SHA256(key, host))``, so that a token opens one node only.

The relay holds the key (``--target.token-key-file``) and derives, for each
delivery, the token of the host it is about to reach (the URL's host in
canonical form, hosts.canonical: lower case, addresses compressed, IPv6
without brackets).  Each controller gets only its own token, as an ordinary
``--web.auth.bearer-token-file``, provisioned with ``memhp-relay
derive-token HOST``.  A token that leaks from one node (or that reaches a
wrong host) opens that node's controller and no other; the key never leaves
the relay.
"""

from __future__ import annotations

import hashlib
import hmac

from memhp.web.secrets import SecretFileError, parse_bearer_token

from .hosts import canonical

MIN_KEY_CHARS = 32


def parse_token_key(data: bytes, path: str) -> bytes:
    key = parse_bearer_token(data, path)
    if len(key) < MIN_KEY_CHARS:
        raise SecretFileError(
            f"token key in {path} is shorter than {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32`)"
        )
    return key


def derive_token(key: bytes, host: str) -> str:
    """The bearer token of the controller at ``host`` (a URL's host, bracketed or not)."""
    return hmac.new(key, canonical(host).encode("ascii"), hashlib.sha256).hexdigest()
