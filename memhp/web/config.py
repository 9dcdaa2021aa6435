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
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
_TOP_KEYS = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
}
_TLS_UNSUPPORTED = {"cert", "key", "client_ca", "cipher_suites", "curve_preferences", "client_allowed_sans"}
_HTTP_KEYS = {"http2", "headers"}


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


def _mapping(value: Any, where: str, path: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise WebConfigError(f"{path}: {where} must be a mapping, got {type(value).__name__}")
    for k in value:
        if not isinstance(k, str):
            raise WebConfigError(f"{path}: {where}: key {k!r} is not a string")
    return value


def _check_keys(doc: dict, allowed: set[str], where: str, path: str, unsupported: set[str] = set()) -> None:  # noqa: B006
    for k in doc:
        if k in unsupported:
            raise WebConfigError(f"{path}: {where}.{k} is not supported by memhp")
        if k not in allowed:
            raise WebConfigError(f"{path}: unknown key {where}.{k}" if where else f"{path}: unknown key {k}")


def _str(value: Any, where: str, path: str) -> str:
    if not isinstance(value, str):
        raise WebConfigError(f"{path}: {where} must be a string, got {type(value).__name__}")
    return value


def _version(value: Any, key: str, path: str) -> str:
    if _str(value, f"tls_server_config.{key}", path) not in TLS_VERSIONS:
        raise WebConfigError(f"{path}: tls_server_config.{key}: unknown TLS version {value!r} (TLS10..TLS13)")
    return value


def _tls(doc: dict, path: str) -> TLSServerConfig | None:
    _check_keys(doc, _TLS_KEYS, "tls_server_config", path, _TLS_UNSUPPORTED)
    base = os.path.dirname(os.path.abspath(path))

    def file(key: str) -> str | None:
        if doc.get(key) in (None, ""):
            return None
        return os.path.join(base, _str(doc[key], f"tls_server_config.{key}", path))

    cert, key = file("cert_file"), file("key_file")
    if cert is None and key is None:
        if any(doc.get(k) for k in ("client_ca_file", "client_auth_type")):
            raise WebConfigError(f"{path}: tls_server_config needs cert_file and key_file")
        return None
    if cert is None:
        raise WebConfigError(f"{path}: tls_server_config: missing cert_file")
    if key is None:
        raise WebConfigError(f"{path}: tls_server_config: missing key_file")
    auth = doc.get("client_auth_type") or "NoClientCert"
    auth = _str(auth, "tls_server_config.client_auth_type", path)
    if auth in _UNSUPPORTED_CLIENT_AUTH:
        raise WebConfigError(
            f"{path}: tls_server_config.client_auth_type {auth} (an unverified client certificate) is not supported "
            "by memhp; use VerifyClientCertIfGiven or RequireAndVerifyClientCert with client_ca_file"
        )
    if auth not in CLIENT_AUTH_TYPES:
        raise WebConfigError(f"{path}: tls_server_config.client_auth_type: invalid ClientAuth {auth!r}")
    ca = file("client_ca_file")
    if ca is not None and auth == "NoClientCert":
        raise WebConfigError(f"{path}: client CA's have been configured without a client_auth_type")
    if ca is None and auth != "NoClientCert":
        raise WebConfigError(f"{path}: client_auth_type {auth} needs client_ca_file")
    min_version = _version(doc.get("min_version") or "TLS12", "min_version", path)
    max_version = _version(doc["max_version"], "max_version", path) if doc.get("max_version") else None
    if max_version and TLS_VERSIONS[max_version] < TLS_VERSIONS[min_version]:
        raise WebConfigError(f"{path}: tls_server_config.max_version is below min_version")
    return TLSServerConfig(cert, key, auth, ca, min_version, max_version)


def _headers(doc: dict, path: str) -> dict[str, str]:
    out = {}
    for name, value in doc.items():
        canonical = next((h for h in ALLOWED_HEADERS if h.lower() == name.lower()), None)
        if canonical is None:
            raise WebConfigError(f"{path}: HTTP header {name!r} can not be configured")
        value = _str(value, f"http_server_config.headers.{name}", path)
        if any(c in value for c in "\r\n\0"):
            raise WebConfigError(f"{path}: http_server_config.headers.{name} holds a line break")
        allowed = ALLOWED_HEADERS[canonical]
        if allowed is not None and value.lower() not in allowed:
            raise WebConfigError(
                f"{path}: invalid value for {canonical}: expected one of {list(allowed)}, got {value!r}"
            )
        out[canonical] = value
    return out


def _users(doc: dict, path: str) -> dict[str, bytes]:
    out = {}
    for user, hashed in doc.items():
        if ":" in user:
            raise WebConfigError(f"{path}: basic_auth_users: user {user!r} contains ':'")
        hashed = _str(hashed, f"basic_auth_users.{user}", path)
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
    doc = _mapping(doc, "the file", path)
    _check_keys(doc, _TOP_KEYS, "", path, {"rate_limit"})
    tls_doc = _mapping(doc.get("tls_server_config"), "tls_server_config", path)
    http_doc = _mapping(doc.get("http_server_config"), "http_server_config", path)
    _check_keys(http_doc, _HTTP_KEYS, "http_server_config", path)
    if not isinstance(http_doc.get("http2", True), bool):
        raise WebConfigError(f"{path}: http_server_config.http2 must be true or false")
    users = None
    if "basic_auth_users" in doc:
        users = _users(_mapping(doc["basic_auth_users"], "basic_auth_users", path), path)
    return WebConfig(
        tls=_tls(tls_doc, path),
        headers=_headers(_mapping(http_doc.get("headers"), "http_server_config.headers", path), path),
        users=users or None,  # an empty map means no auth, as in exporter-toolkit
    )


def load_web_config(path: str) -> WebConfig:
    from .secrets import read_regular_file

    data, _ = read_regular_file(path, MAX_WEB_CONFIG_BYTES)
    return parse_web_config(data, path)
