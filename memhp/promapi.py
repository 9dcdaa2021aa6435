"""A small, read-only client of the Prometheus HTTP API (``/api/v1``), with
errors worded for the person running ``memhp report``."""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from memhp import units

MAX_POINTS = 11_000  # Prometheus refuses range queries with more points per series
CHUNK_POINTS = 1_440  # range queries are split into chunks of at most this many points
NICE_STEPS = [15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800]


DEFAULT_MAX_SAMPLES = 50_000_000  # Prometheus' default --query.max-samples
MAX_URL_QUERY = 4_000  # longer queries are POSTed (common proxy limits on a request line are 4-8 KiB)
RESPONSE_POINTS = 200_000  # at most this many points in one answer: bounds the client's memory


class ReportError(Exception):
    """Something the user can act on; printed without a traceback."""


class SampleLimitError(ReportError):
    """The server refused a query for a limit that a shorter time range
    relieves: samples (Prometheus --query.max-samples, Mimir -querier.max-samples)
    or chunks (Mimir and Cortex -querier.max-fetched-chunks-per-query and
    -querier.max-fetched-chunk-bytes-per-query, Thanos --store.limits.request-samples,
    which it enforces as chunks).  The report splits such a query by time."""


class SeriesLimitError(ReportError):
    """The server refused a query for the number of series it selects: a
    shorter time range does not help, so the report stops and says which
    limit to raise."""


LIMIT_HINT = (
    "over the server's sample limit (Prometheus --query.max-samples, tell memhp report with "
    "--query-max-samples; Mimir -querier.max-fetched-chunks-per-query): "
)
SERIES_HINT = (
    "over the server's per-query series limit (Mimir/Cortex -querier.max-fetched-series-per-query, "
    "Thanos --store.limits.request-series): the report reads every node's series at once; raise the "
    "limit for this tenant or review fewer hosts per run with --selector: "
)

# Wordings of the refusals, lower case: Prometheus ("query processing would load
# too many samples into memory"), Mimir ("the query exceeded the maximum number
# of chunks ... (err-mimir-max-chunks-per-query)", "... aggregated chunks size
# limit ..."), Cortex ("the query hit the max number of chunks limit"), Thanos
# store ("exceeded chunks limit", "exceeded bytes limit").
_TIME_SPLITTABLE = (
    "too many samples",
    "max samples",
    "sample limit",
    "samples limit",
    "max-samples",
    "number of chunks",
    "chunks limit",
    "chunks size limit",
    "data size limit",
    "bytes limit",
    "err-mimir-max-chunks",
    "err-mimir-max-estimated",
)
_SERIES = (
    "maximum number of series",
    "max number of series",
    "series limit",
    "err-mimir-max-series-per-query",
)


def is_sample_limit(message: str) -> bool:
    """A refusal that a query over a shorter time range would not get."""
    m = message.lower()
    return any(w in m for w in _TIME_SPLITTABLE)


def is_series_limit(message: str) -> bool:
    m = message.lower()
    return not is_sample_limit(m) and any(w in m for w in _SERIES)


def limit_error(error: str, message: str) -> ReportError:
    """The error to raise for a refusal whose server text is ``error``."""
    if is_sample_limit(error):
        return SampleLimitError(LIMIT_HINT + message)
    if is_series_limit(error):
        return SeriesLimitError(SERIES_HINT + message)
    return ReportError(message)


def parse_duration(text: str) -> float:
    """A Prometheus duration ("30d", "1h30m", "90s") or plain seconds; a range or
    step must be positive."""
    value = units.parse_duration(text)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"duration must be positive: {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """Seconds as a Prometheus duration ("3d", "1h30m", "90s")."""
    s = int(round(seconds))
    if s <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


def parse_time(text: str) -> float:
    """RFC 3339 or Unix seconds, as Prometheus accepts them."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (RFC 3339, e.g. 2024-05-01T00:00:00Z, or Unix seconds)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def auto_step(range_s: float, requested: float | None, minimum: float = 60.0) -> tuple[float, str | None]:
    """The query resolution: ``requested`` if it keeps every series under
    MAX_POINTS points, else the smallest nice step that does (with a note);
    by default the smallest nice step >= ``minimum`` that does."""
    need = range_s / MAX_POINTS
    if requested is not None:
        if range_s / requested + 1 <= MAX_POINTS:
            return requested, None
        step = next((s for s in NICE_STEPS if range_s / s + 1 <= MAX_POINTS), math.ceil(need) + 1)
        return step, (
            f"--step {format_duration(requested)} would ask for {int(range_s / requested) + 1} points per "
            f"series (Prometheus allows {MAX_POINTS}); using {format_duration(step)}"
        )
    step = next(s for s in NICE_STEPS if s >= max(minimum, need) and range_s / s + 1 <= MAX_POINTS)
    return step, None


def normalize_selector(text: str | None) -> str:
    """``'{instance=~"db.*"}'`` (braces optional) -> ``'instance=~"db.*"'``, the
    matchers to add to every metric selector."""
    if not text:
        return ""
    s = text.strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    elif "{" in s or "}" in s:
        raise ValueError(f"--selector must be label matchers in braces, e.g. '{{instance=~\"db.*\"}}': {text!r}")
    return s.strip().rstrip(",")


class Prometheus:
    """``instant``/``range``/``series`` against ``url``.  ``on_request`` is
    called after every HTTP request (progress)."""

    def __init__(self, url: str, timeout: float = 60.0, on_request: Callable[[str], None] | None = None) -> None:
        if not re.match(r"^https?://", url):
            url = "http://" + url
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.on_request = on_request or (lambda what: None)
        self.requests = 0
        self.chunks = 0
        self.query_seconds = 0.0  # wall time spent waiting for answers

    def _get(self, path: str, params: list[tuple[str, str]], what: str) -> Any:
        encoded = urllib.parse.urlencode(params)
        body = b""
        t0 = time.monotonic()
        try:
            headers = {"Accept": "application/json"}
            if len(encoded) <= MAX_URL_QUERY or path not in ("/api/v1/query", "/api/v1/query_range"):
                req = urllib.request.Request(f"{self.url}{path}?{encoded}", headers=headers)
            else:  # the query APIs take the same parameters as a form; proxies refuse long URLs
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                req = urllib.request.Request(f"{self.url}{path}", data=encoded.encode(), headers=headers)
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                body = r.read()
        except urllib.error.HTTPError as e:
            body = e.read()
            answer = _json(body)
            if answer is None:
                raise ReportError(
                    f"{self.url} answered HTTP {e.code} to {path}: is this a Prometheus server? ({body[:200]!r})"
                ) from None
            message = f"Prometheus refused {what}: {answer.get('errorType', e.code)}: {answer.get('error', '')}"
            raise limit_error(str(answer.get("error", "")), message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ReportError(f"cannot reach Prometheus at {self.url}: {reason}") from None
        finally:
            self.query_seconds += time.monotonic() - t0
            self.requests += 1
            self.on_request(what)
        answer = _json(body)
        if answer is None or "status" not in answer:
            raise ReportError(
                f"{self.url}{path} did not answer with the Prometheus API's JSON: is --prometheus "
                f"the server's base URL? ({body[:200]!r})"
            )
        if answer["status"] != "success":
            message = f"Prometheus refused {what}: {answer.get('errorType')}: {answer.get('error')}"
            raise limit_error(str(answer.get("error", "")), message)
        return answer["data"]

    def buildinfo(self) -> dict:
        try:
            return self._get("/api/v1/status/buildinfo", [], "the build info request")
        except ReportError as e:
            if "cannot reach" in str(e):
                raise
            return {}

    def instant(self, expr: str, at: float) -> list[dict]:
        data = self._get("/api/v1/query", [("query", expr), ("time", f"{at:.3f}")], f"query {expr}")
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def range_chunks(
        self, expr: str, start: float, end: float, step: float, *, inputs: int, outputs: int, max_samples: int
    ) -> Iterator[list[dict]]:
        """A range query on the grid start + k*step, split by time into chunks
        that stay under ``max_samples`` for ``inputs`` series read and under
        RESPONSE_POINTS points per answer for ``outputs`` series returned; yields each chunk's result (the
        caller reduces it, so nothing grows with the range or the fleet).  A
        chunk the server still refuses for its sample limit is halved, down to
        one point; then the refusal is reported."""
        n_points = int((end - start) // step) + 1
        per_chunk = _per_chunk(inputs, outputs, max_samples)
        k = 0
        while k < n_points:
            k_end = min(n_points, k + per_chunk) - 1
            s, e = start + k * step, start + k_end * step
            try:
                data = self._get(
                    "/api/v1/query_range",
                    [("query", expr), ("start", f"{s:.3f}"), ("end", f"{e:.3f}"), ("step", f"{step:g}")],
                    f"query {expr}",
                )
            except SampleLimitError as err:
                if k_end == k:
                    raise SampleLimitError(
                        f"{err} (even one time step of it: select fewer hosts with --selector, or ask for a "
                        f"higher limit)"
                    ) from None
                per_chunk = max(1, (k_end - k + 1) // 2)
                continue
            self.chunks += 1
            yield data["result"]
            k = k_end + 1

    def chunk_count(self, start: float, end: float, step: float, *, inputs: int, outputs: int, max_samples: int) -> int:
        n_points = int((end - start) // step) + 1
        return -(-n_points // _per_chunk(inputs, outputs, max_samples))

    def metric_names(self, match: str, start: float | None = None, end: float | None = None) -> list[str]:
        """The metric names among the series ``match`` selects (a few dozen
        strings, however many series there are)."""
        params = [("match[]", match)]
        if start is not None and end is not None:
            params += [("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        return list(self._get("/api/v1/label/__name__/values", params, f"metric names of {match}"))

    def label_values(self, label: str, matches: list[str], start: float, end: float) -> list[str]:
        """The values of ``label`` among the series any of ``matches`` selects in [start, end]
        (the host names of a fleet: one string per host, the one list the report keeps whole)."""
        params = [("match[]", m) for m in matches] + [("start", f"{start:.3f}"), ("end", f"{end:.3f}")]
        return list(self._get(f"/api/v1/label/{label}/values", params, f"the {label} values"))

    def count(self, expr: str, at: float) -> int:
        """``count(expr)`` evaluated by the server: one number back."""
        res = self.instant(f"count({expr})", at)
        return int(float(res[0]["value"][1])) if res else 0


def _per_chunk(inputs: int, outputs: int, max_samples: int) -> int:
    return max(1, min(CHUNK_POINTS, max_samples // max(inputs, 1), RESPONSE_POINTS // max(outputs, 1)))


def _json(body: bytes) -> dict | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
