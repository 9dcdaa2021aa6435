"""A query frontend with Mimir's per-query limits, in front of a real Prometheus.

Mimir and Cortex refuse a query for the chunks it fetches
(``-querier.max-fetched-chunks-per-query``) or the series it selects
(``-querier.max-fetched-series-per-query``), with HTTP 422 and their own
wording; Prometheus has neither limit.  This proxy enforces both the way
Mimir counts them, on the real data, and forwards what passes:

- series: for every memhp selector in the query, the series it matches in the
  time the query reads (Prometheus answers ``count(last_over_time(sel[span]))``);
- chunks: series × the 2-hour TSDB blocks the query reads (one chunk per
  series per block at the 5-minute samples of the test fleet).

The time a query reads is its own range (query_range) plus its longest range
selector or subquery range plus its longest offset.
"""

from __future__ import annotations

import json
import math
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from memhp import units

from .wait import free_port

BLOCK_SECONDS = 7200
# Mimir's wording (pkg/util/limiter), error ids included
CHUNKS_MESSAGE = (
    "the query exceeded the maximum number of chunks (limit: {limit} chunks) (err-mimir-max-chunks-per-query). "
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-chunks-per-query, or contact your service administrator."
)
SERIES_MESSAGE = (
    "the query exceeded the maximum number of series (limit: {limit} series) (err-mimir-max-series-per-query). "
    "Consider reducing the time range and/or number of series selected by the query. One way to reduce the "
    "number of selected series is to add more label matchers to the query. Otherwise, to adjust the related "
    "per-tenant limit, configure -querier.max-fetched-series-per-query, or contact your service administrator."
)
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*memhp_[a-zA-Z0-9_:]*)(\{[^}]*\})?")
_RANGE = re.compile(r"\[([0-9a-z]+)(?::[0-9a-z]*)?\]")
_OFFSET = re.compile(r"\boffset\s+([0-9a-z]+)")


class LimitingFrontend:
    def __init__(self, upstream: str, *, max_chunks: int = 0, max_series: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.max_chunks, self.max_series = max_chunks, max_series
        self.refused: list[str] = []  # the refused queries, for the test to look at
        self.passed = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        frontend = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                frontend.handle(self, b"")

            def do_POST(self) -> None:  # the query APIs take their parameters as a form too
                frontend.handle(self, self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _upstream(self, path_qs: str, form: bytes = b"") -> tuple[int, bytes]:
        req = urllib.request.Request(self.upstream + path_qs, data=form or None)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def _series(self, selector: str, span: float, at: str) -> int:
        q = urllib.parse.urlencode({"query": f"count(last_over_time({selector}[{int(math.ceil(span))}s]))", "time": at})
        status, body = self._upstream(f"/api/v1/query?{q}")
        result = json.loads(body)["data"]["result"] if status == 200 else []
        return int(float(result[0]["value"][1])) if result else 0

    def verdict(self, path: str, params: dict[str, str]) -> str | None:
        """The refusal Mimir would give this query, or None."""
        expr = params.get("query", "")
        span = max([units.parse_duration(r) for r in _RANGE.findall(expr)] + [0.0])
        span += max([units.parse_duration(o) for o in _OFFSET.findall(expr)] + [0.0])
        at = params.get("time") or params.get("end", "")
        if path.endswith("/query_range"):
            span += float(params["end"]) - float(params["start"])
        span = max(span, 300.0)  # an instant selector still reads its lookback
        series = sum(self._series(name + (matchers or ""), span, at) for name, matchers in _SELECTOR.findall(expr))
        if self.max_series and series > self.max_series:
            return SERIES_MESSAGE.format(limit=self.max_series)
        chunks = series * math.ceil(span / BLOCK_SECONDS)
        if self.max_chunks and chunks > self.max_chunks:
            return CHUNKS_MESSAGE.format(limit=self.max_chunks)
        return None

    def handle(self, req: BaseHTTPRequestHandler, form: bytes) -> None:
        parsed = urllib.parse.urlsplit(req.path)
        params = dict(urllib.parse.parse_qsl(parsed.query or form.decode()))
        refusal = None
        if parsed.path in ("/api/v1/query", "/api/v1/query_range"):
            refusal = self.verdict(parsed.path, params)
        if refusal is not None:
            self.refused.append(params.get("query", ""))
            status = 422
            body = json.dumps({"status": "error", "errorType": "execution", "error": refusal}).encode()
        else:
            self.passed += 1
            status, body = self._upstream(req.path, form)
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)
