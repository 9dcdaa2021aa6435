"""The Prometheus gate: PromQL checks that must return nothing for an action to run.

Before a rule acts, every ``fleet.gate.refuse_when`` check, then the rule's own
``gate`` checks, run as instant queries against a Prometheus-compatible API
(Prometheus, Thanos, Mimir).  A check that returns any series refuses the
action, naming the check.  A query that fails, is too slow or answers something
that is not a vector refuses too (fail closed): a gate that cannot be read is
not a gate that is open.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..config import GateConfig, GateQuery
from ..httpclient import DeadlineExceeded, ResponseTooLarge, request

MAX_ANSWER = 4 << 20  # a check is meant to return nothing or a few series


class GateError(Exception):
    """The check could not be evaluated."""


@dataclass(frozen=True)
class Verdict:
    check: str
    series: int  # 0: the check allows the action
    example: str = ""  # the first series' labels, for the reason


def verdict(check: str, body: bytes) -> Verdict:
    """What a query API answer says of one check; GateError when it is not a successful vector."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise GateError("the answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        err = doc.get("error") if isinstance(doc, dict) else None
        raise GateError(f"query failed: {str(err)[:300]}" if err else "the answer is not a successful query")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "vector" or not isinstance(data.get("result"), list):
        kind = data.get("resultType") if isinstance(data, dict) else None
        raise GateError(f"the result is {kind or 'missing'}, not an instant vector")
    result: list[Any] = data["result"]
    example = ""
    if result:
        first = result[0]
        metric = first.get("metric") if isinstance(first, dict) else None
        example = "{" + ", ".join(f'{k}="{v}"' for k, v in sorted((metric or {}).items())) + "}"
    return Verdict(check, len(result), example[:300])


def checks(fleet_gate: GateConfig | None, rule_gate: Sequence[GateQuery]) -> list[GateQuery]:
    """The checks an action of a rule runs, in order: the fleet's, then the rule's."""
    fleet = list(fleet_gate.refuse_when) if fleet_gate else []
    return fleet + list(rule_gate)


def refusal(v: Verdict) -> str:
    return f"gate check {v.check} returned {v.series} series (first: {v.example}): refused"


class Gate:
    """Runs checks against the configured query API."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg = cfg
        self.base = cfg.prometheus.rstrip("/")
        https = self.base.startswith("https:")
        self._https = https
        self._ssl: ssl.SSLContext | None = None
        # A bearer token never travels in clear text (check-config refuses it for http, too).
        self._token_file = cfg.bearer_token_file if https else None

    def _tls(self) -> ssl.SSLContext | None:
        """Built on first use: a missing CA file refuses actions, it does not stop the controller."""
        if self._https and self._ssl is None:
            try:
                self._ssl = ssl.create_default_context(cafile=self.cfg.ca_file)
            except (OSError, ssl.SSLError) as e:
                raise GateError(f"fleet.gate.ca_file: {e}") from None
        return self._ssl

    def _auth(self) -> dict[str, str]:
        if not self._token_file:
            return {}
        try:
            with open(self._token_file, encoding="utf-8") as f:
                token = f.read(16384).strip()
        except OSError as e:
            raise GateError(f"cannot read fleet.gate.bearer_token_file: {e.strerror}") from None
        return {"Authorization": f"Bearer {token}"}

    def run(self, q: GateQuery) -> Verdict:
        """One check, evaluated now; GateError when it cannot be."""
        url = f"{self.base}/api/v1/query?" + urlencode({"query": q.expr})
        try:
            resp = request(
                url,
                headers={"Accept": "application/json", **self._auth()},
                deadline=self.cfg.timeout,
                max_bytes=MAX_ANSWER,
                ssl_context=self._tls(),
            )
        except DeadlineExceeded:
            raise GateError(f"no answer within {self.cfg.timeout:g}s") from None
        except ResponseTooLarge as e:
            raise GateError(str(e)) from None
        except (OSError, ValueError, http.client.HTTPException) as e:
            raise GateError(f"{type(e).__name__}: {e}"[:300]) from None
        if resp.status != 200 and resp.status not in (400, 422):  # 400/422: PromQL errors, JSON bodies
            raise GateError(f"HTTP {resp.status} {resp.reason}")
        return verdict(q.name, resp.body)
