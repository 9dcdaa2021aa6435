"""``--web.config.file``: exporter-toolkit's web configuration file.

The file node_exporter, Prometheus and Alertmanager read
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md)::

    tls_server_config:
      cert_file: server.crt          # relative paths: from the file's directory
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # default NoClientCert
      client_ca_file: clients.pem
      min_version: TLS12             # default TLS12; TLS10..TLS13
      max_version: TLS13
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':')

Unknown keys are errors, as with exporter-toolkit's strict parsing.  Keys
memhp cannot honour with Python's TLS (``cipher_suites``,
``curve_preferences``, ``client_allowed_sans``, inline ``cert``/``key``, the
client-auth types that skip verification) are refused rather than ignored:
a security setting silently dropped is worse than a clear error.
``http2`` and ``prefer_server_cipher_suites`` are accepted and have no
effect (memhp serves HTTP/1.x; OpenSSL picks the suite).
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import yaml

from .secrets import SecretFileError

MAX_WEB_CONFIG_BYTES = 1 << 20

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")  # accept unverified certificates
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# exporter-toolkit's list: the headers a web config may set, and their allowed values (None: any).
ALLOWED_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}


class WebConfigError(SecretFileError):
    """The web config file is unusable; the message names the file and the key."""


@dataclass(frozen=True)
class TLSServerConfig:
    cert_file: str
    key_file: str
    client_auth_type: str = "NoClientCert"
    client_ca_file: str | None = None
    min_version: str = "TLS12"
    max_version: str | None = None

    def files(self) -> tuple[str, ...]:
        return (self.cert_file, self.key_file) + ((self.client_ca_file,) if self.client_ca_file else ())


@dataclass(frozen=True)
class WebConfig:
    tls: TLSServerConfig | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] | None = None  # None: no basic auth (no key, or an empty map)


# The file as exporter-toolkit defines it, converted strictly by msgspec.  Keys memhp cannot
# honour are declared (as Any, UNSET when absent) so that they are refused by name, not as unknown.


class _Strict(msgspec.Struct, forbid_unknown_fields=True):
    pass


class _TLSFile(_Strict):
    cert_file: str | None = None
    key_file: str | None = None
    client_auth_type: str | None = None
    client_ca_file: str | None = None
    min_version: str | None = None
    max_version: str | None = None
    prefer_server_cipher_suites: Any = None  # accepted, no effect: OpenSSL picks the suite
    cert: Any = msgspec.UNSET
    key: Any = msgspec.UNSET
    client_ca: Any = msgspec.UNSET
    cipher_suites: Any = msgspec.UNSET
    curve_preferences: Any = msgspec.UNSET
    client_allowed_sans: Any = msgspec.UNSET


class _HTTPFile(_Strict):
    http2: bool = True  # accepted, no effect: memhp serves HTTP/1.x
    headers: dict[str, str] | None = None


class _File(_Strict):
    tls_server_config: _TLSFile | None = None
    http_server_config: _HTTPFile | None = None
    basic_auth_users: dict[str, str] | None = None
    rate_limit: Any = msgspec.UNSET


_UNSUPPORTED = ("cert", "key", "client_ca", "cipher_suites", "curve_preferences", "client_allowed_sans")


def _convert(doc: Any, path: str) -> _File:
    try:
        return msgspec.convert({} if doc is None else doc, _File, strict=True)
    except msgspec.ValidationError as e:
        msg, _, at = str(e).rpartition(" - at `")
        msg, at = (msg, at[:-1]) if msg else (str(e), "$")
        raise WebConfigError(f"{path}: {_explain(msg, at, doc)}") from None


def _explain(msg: str, at: str, doc: Any) -> str:
    """msgspec's message in the words this file's errors have always had."""
    is_key = at.startswith("key` in `$")
    where = at.removeprefix("key` in `").removeprefix("$").lstrip(".")
    unknown = re.fullmatch(r"Object contains unknown field `(.*)`", msg, re.DOTALL)
    if unknown:
        return f"unknown key {where}.{unknown[1]}" if where else f"unknown key {unknown[1]}"
    got = re.fullmatch(r"Expected `([^`]*)`, got `([^`]*)`", msg)
    if got is None:
        return f"{where or 'the file'}: {msg}"
    if got[1].startswith("object"):
        return f"{where or 'the file'} must be a mapping, got {_PY.get(got[2], got[2])}"
    if got[1].startswith("bool"):
        return f"{where} must be true or false"
    mapping = where.removesuffix("[...]")
    entries = _dict_at(doc, mapping)
    if is_key:
        return f"{mapping}: key {next(k for k in entries if not isinstance(k, str))!r} is not a string"
    if where.endswith("[...]"):
        key, value = next((k, v) for k, v in entries.items() if not isinstance(v, str))
        return f"{mapping}.{key} must be a string, got {type(value).__name__}"
    return f"{where} must be a string, got {_PY.get(got[2], got[2])}"


def _dict_at(doc: Any, where: str) -> dict:
    for part in where.split("."):
        doc = doc[part]
    return doc


_PY = {"array": "list", "object": "dict", "null": "NoneType", "str": "str", "int": "int", "float": "float"}


def _version(value: str, key: str, path: str) -> str:
    if value not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: unknown TLS version {value!r} (TLS10..TLS13)")
    return value


def _tls(doc: _TLSFile | None, path: str) -> TLSServerConfig | None:
    if doc is None:
        return None
    for k in _UNSUPPORTED:
        if getattr(doc, k) is not msgspec.UNSET:
            raise WebConfigError(f"{path}: tls_server_config.{k} is not supported by memhp")
    base = os.path.dirname(os.path.abspath(path))

    def file(name: str | None) -> str | None:
        return os.path.join(base, name) if name else None

    cert, key = file(doc.cert_file), file(doc.key_file)
    if cert is None and key is None:
        if doc.client_ca_file or doc.client_auth_type:
            raise WebConfigError(f"{path}: tls_server_config needs cert_file and key_file")
        return None
    if cert is None:
        raise WebConfigError(f"{path}: tls_server_config: missing cert_file")
    if key is None:
        raise WebConfigError(f"{path}: tls_server_config: missing key_file")
    auth = doc.client_auth_type or "NoClientCert"
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type {auth} (an unverified client certificate) is not supported "
            "by memhp; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{path}: tls_server_config.client_auth_type: invalid ClientAuth {auth!r}")
    ca = file(doc.client_ca_file)
    if ca is not None and auth == "NoClientCert":
        raise WebConfigError(f"{path}: client CA's have been configured without a client_auth_type")
    if ca is None and auth != "NoClientCert":
        raise WebConfigError(f"{path}: client_auth_type {auth} needs client_ca_file")
    min_version = _version(doc.min_version or "TLS12", "min_version", path)
    max_version = _version(doc.max_version, "max_version", path) if doc.max_version else None
    if max_version and TLS_VERSIONS[max_version] < TLS_VERSIONS[min_version]:
        raise WebConfigError(f"{path}: tls_server_config.max_version is below min_version")
    return TLSServerConfig(cert, key, auth, ca, min_version, max_version)


def _headers(doc: dict[str, str], path: str) -> dict[str, str]:
    out = {}
    for name, value in doc.items():
        canonical = next((h for h in ALLOWED_HEADERS if h.lower() == name.lower()), None)
        if canonical is None:
            raise WebConfigError(f"{path}: HTTP header {name!r} can not be configured")
        if any(c in value for c in "\r\n\0"):
            raise WebConfigError(f"{path}: http_server_config.headers.{name} holds a line break")
        allowed = ALLOWED_HEADERS[canonical]
        if allowed is not None and value.lower() not in allowed:
            raise WebConfigError(
                f"{path}: invalid value for {canonical}: expected one of {list(allowed)}, got {value!r}"
            )
        out[canonical] = value
    return out


def _users(doc: dict[str, str], path: str) -> dict[str, bytes]:
    out = {}
    for user, hashed in doc.items():
        if ":" in user:
            raise WebConfigError(f"{path}: basic_auth_users: user {user!r} contains ':'")
        if not (hashed.startswith(("$2a$", "$2b$", "$2y$")) and len(hashed) == 60):
            raise WebConfigError(f"{path}: basic_auth_users.{user} is not a bcrypt hash ($2y$..., 60 characters)")
        out[user] = hashed.encode("ascii", "replace")
    return out


def parse_web_config(data: bytes, path: str) -> WebConfig:
    try:
        doc = yaml.safe_load(data.decode("utf-8")) if data.strip() else {}
    except UnicodeDecodeError:
        raise WebConfigError(f"{path}: not UTF-8") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
        raise WebConfigError(f"{where}: {e.problem or e}") from None
    except (yaml.YAMLError, RecursionError, ValueError) as e:
        raise WebConfigError(f"{path}: not valid YAML: {type(e).__name__}") from None
    cfg = _convert(doc, path)
    if cfg.rate_limit is not msgspec.UNSET:
        raise WebConfigError(f"{path}: rate_limit is not supported by memhp")
    http = cfg.http_server_config or _HTTPFile()
    users = _users(cfg.basic_auth_users, path) if cfg.basic_auth_users is not None else None
    return WebConfig(
        tls=_tls(cfg.tls_server_config, path),
        headers=_headers(http.headers or {}, path),
        users=users or None,  # an empty map means no auth, as in exporter-toolkit
    )


def load_web_config(path: str) -> WebConfig:
    from .secrets import read_regular_file

    data, _ = read_regular_file(path, MAX_WEB_CONFIG_BYTES)
    return parse_web_config(data, path)
