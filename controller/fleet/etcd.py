"""The budget's :class:`~controller.fleet.budget.Store` on etcd v3, through its JSON gateway.

etcd serves its v3 API as JSON over HTTP on the client port
(https://etcd.io/docs/v3.4/dev-guide/api_grpc_gateway/): keys and values are
base64, 64-bit integers are strings.  This avoids a gRPC client: the Python
ones on PyPI (``etcd3``) are unmaintained and need an old protobuf.  Each call
is one bounded request (:mod:`controller.httpclient`: total deadline, capped
answer); endpoints are tried in order until one answers.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Iterable, Mapping
from typing import Any

from ..config import EtcdConfig
from ..httpclient import DeadlineExceeded, ResponseTooLarge, request
from .budget import BudgetUnavailable

# A range of 10,000 keys (max_concurrent's bound) is about 1.5 MB of JSON.
MAX_ANSWER = 16 << 20


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def prefix_end(prefix: str) -> str:
    """The end of the range of keys starting with ``prefix`` (etcd's convention: last byte + 1)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def tls_context(ca_file: str | None, cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


class EtcdStore:
    def __init__(self, cfg: EtcdConfig) -> None:
        self.cfg = cfg
        self.endpoints = [e.rstrip("/") for e in cfg.endpoints]
        self._ssl: ssl.SSLContext | None = None
        self._token: str | None = None

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context, built on first use: a missing or bad file refuses actions (and is
        counted and alerted on), it does not keep the controller from starting."""
        if self._ssl is None and any(e.startswith("https:") for e in self.endpoints):
            try:
                self._ssl = tls_context(self.cfg.ca_file, self.cfg.cert_file, self.cfg.key_file)
            except (OSError, ssl.SSLError) as e:
                raise BudgetUnavailable(f"etcd TLS files (fleet.budget.etcd): {e}") from None
        return self._ssl

    # --- transport --------------------------------------------------------------------------

    def _post(self, endpoint: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = self._token
        resp = request(
            f"{endpoint}{path}",
            method="POST",
            body=json.dumps(doc).encode(),
            headers=headers,
            deadline=self.cfg.timeout,
            max_bytes=MAX_ANSWER,
            ssl_context=self._tls(),
        )
        try:
            answer = json.loads(resp.body)
        except ValueError:
            raise BudgetUnavailable(f"etcd {endpoint}{path}: HTTP {resp.status}, not JSON") from None
        if not isinstance(answer, dict):
            raise BudgetUnavailable(f"etcd {endpoint}{path}: HTTP {resp.status}, not a JSON object")
        if resp.status != 200 or "error" in answer:
            raise _EtcdError(endpoint, path, resp.status, answer)
        return answer

    def call(self, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        """One API call on the first endpoint that answers; BudgetUnavailable when none does."""
        problems = []
        for endpoint in self.endpoints:
            try:
                return self._call_with_auth(endpoint, path, doc)
            except (OSError, DeadlineExceeded, ResponseTooLarge, ValueError) as e:
                problems.append(f"{endpoint}: {type(e).__name__}: {e}")
            except _EtcdError as e:
                raise BudgetUnavailable(str(e)) from None
        raise BudgetUnavailable("etcd unreachable: " + "; ".join(problems)[:900])

    def _call_with_auth(self, endpoint: str, path: str, doc: dict[str, Any]) -> dict[str, Any]:
        if self.cfg.username and self._token is None:
            self._authenticate(endpoint)
        try:
            return self._post(endpoint, path, doc)
        except _EtcdError as e:
            if not (self.cfg.username and e.code == 16):  # UNAUTHENTICATED: the token expired
                raise
        self._authenticate(endpoint)
        return self._post(endpoint, path, doc)

    def _authenticate(self, endpoint: str) -> None:
        self._token = None
        try:
            with open(self.cfg.password_file or "", encoding="utf-8") as f:
                password = f.read(4096).strip()
        except OSError as e:
            raise BudgetUnavailable(f"cannot read fleet.budget.etcd.password_file: {e.strerror}") from None
        answer = self._post(endpoint, "/v3/auth/authenticate", {"name": self.cfg.username, "password": password})
        token = answer.get("token")
        if not isinstance(token, str) or not token:
            raise BudgetUnavailable("etcd authenticate: no token in the answer")
        self._token = token

    # --- Store ------------------------------------------------------------------------------

    def grant(self, ttl: float) -> str:
        answer = self.call("/v3/lease/grant", {"TTL": str(max(1, round(ttl)))})
        lease = answer.get("ID")
        if not isinstance(lease, str) or not lease.isdigit():
            raise BudgetUnavailable("etcd lease grant: no lease ID in the answer")
        return lease

    def keepalive(self, lease: str) -> bool:
        answer = self.call("/v3/lease/keepalive", {"ID": lease})
        result = answer.get("result")
        if not isinstance(result, dict):
            raise BudgetUnavailable("etcd lease keepalive: no result in the answer")
        # An expired or revoked lease answers without a TTL (or TTL 0).
        return str(result.get("TTL", "0")) not in ("0", "")

    def revoke(self, lease: str) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": lease})
        except BudgetUnavailable as e:
            if "lease not found" not in str(e):  # already expired: what revoking wanted
                raise

    def keys(self, prefix: str, limit: int) -> set[str]:
        answer = self.call(
            "/v3/kv/range",
            {"key": _b64(prefix), "range_end": prefix_end(prefix), "keys_only": True, "limit": str(limit + 1)},
        )
        kvs = answer.get("kvs", [])
        if not isinstance(kvs, list):
            raise BudgetUnavailable("etcd range: kvs is not a list")
        try:
            return {base64.b64decode(kv["key"]).decode() for kv in kvs}
        except (TypeError, KeyError, ValueError):
            raise BudgetUnavailable("etcd range: a key is not base64 text") from None

    def create_all(self, keys: Mapping[str, str], value: str) -> bool:
        doc = {
            "compare": [{"key": _b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"} for k in keys],
            "success": [
                {"request_put": {"key": _b64(k), "value": _b64(value), "lease": lease}} for k, lease in keys.items()
            ],
        }
        return self.call("/v3/kv/txn", doc).get("succeeded") is True

    def delete(self, keys: Iterable[str]) -> None:
        for k in keys:
            self.call("/v3/kv/deleterange", {"key": _b64(k)})


class _EtcdError(Exception):
    """etcd answered, with an error: not worth trying another endpoint (they share the cluster)."""

    def __init__(self, endpoint: str, path: str, status: int, answer: dict[str, Any]) -> None:
        self.code = answer.get("code")
        msg = str(answer.get("message") or answer.get("error") or "")[:300]
        super().__init__(f"etcd {endpoint}{path}: HTTP {status}: {msg}")
