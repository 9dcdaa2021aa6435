"""Pull mode: poll Alertmanager's v2 API for this node's alerts and reconcile.

For fleets where Alertmanager cannot address each node's controller.  Every
poll asks ``GET /api/v2/alerts?active=true&silenced=false&inhibited=false``
with ``filter=<node label>="<node name>"`` (plus any extra matchers), then
reconciles level-triggered:

* every alert returned is submitted as firing, every poll: the engine dedups
  by occurrence ``(fingerprint, startsAt)``, so repeats never act twice, and a
  notification lost anywhere is just picked up by the next poll;
* every occurrence that was returned by the previous successful poll and is
  gone now (resolved, silenced, inhibited, relabelled) is submitted once as
  resolved, with ``endsAt`` = now and the annotation ``memhp_resolved_by:
  pull`` (so a rule can tell a synthesised resolution from Alertmanager's);
* a failed poll (network, HTTP status, unparsable answer, sink full or
  unavailable) changes nothing: it is counted in ``polls{result}``, logged,
  and the next poll starts again from the last good state.

Polls are kind to a shared Alertmanager and honest about what they see
(docs/controller.md, "Pull mode at scale"):

* each poll has a total deadline (``--alertmanager.timeout``: connect,
  headers and body together, so a server dripping bytes cannot hold it) and
  a response-size cap (``--alertmanager.max-response-bytes``) that fits the
  DaemonSet's memory limit;
* the first poll starts at a random point of the first interval and every
  interval is jittered by ±10%, so a fleet restarted at once does not poll
  in step;
* after a failure the next poll waits twice as long as the last wait (up to
  8 intervals, at most 5 minutes), and at least as long as a 429's or 503's
  ``Retry-After`` says (with the same cap);
* ``memhp_controller_alertmanager_poll_staleness_seconds`` is the age of
  the last successful poll (or of the start, before the first), which the
  alert MemhpControllerAlertmanagerPollsFailing watches.

The node filter is mandatory: an empty node name would match every node's
alerts, so pull mode refuses to start without one.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import logging
import os
import random
import ssl
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from prometheus_client import CollectorRegistry, Gauge

from memhp.controller import httpclient
from memhp.controller.alert import FIRING, RESOLVED, Alert, AlertSink, SinkFull, SinkUnavailable
from memhp.controller.metrics import ControllerMetrics
from memhp.program import duration
from memhp.units import format_duration
from memhp.web.secrets import SecretFile, SecretFileError, parse_basic_auth, parse_bearer_token

from .alertmanager_payload import PayloadError, parse_api_alert, parse_api_alerts
from .common import now_time

log = logging.getLogger(__name__)

SOURCE = "pull"
RESOLVED_BY_ANNOTATION = "memhp_resolved_by"
DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 10.0
# A poll's answer is held whole while it is parsed: a 4 MiB answer (5,000 alerts of one node) parses into
# 12 MiB of objects (16 MiB at the peak, measured), well inside the DaemonSet's 256 Mi limit.
DEFAULT_MAX_RESPONSE_BYTES = 4 << 20
MAX_RESPONSE_BYTES_LIMIT = 64 << 20
JITTER = 0.1  # each interval is drawn from [1 - JITTER, 1 + JITTER] times the interval
BACKOFF_INTERVALS = 8  # the longest wait after failures, in intervals
BACKOFF_CAP = 300.0  # and in seconds

# polls{result} values
P_SUCCESS = "success"
P_ERROR = "error"  # connection refused, timeout, TLS, HTTP status
P_BAD_RESPONSE = "bad_response"  # not the JSON the v2 API documents
P_SINK_FULL = "sink_full"
P_SINK_UNAVAILABLE = "sink_unavailable"
POLL_RESULTS = (P_SUCCESS, P_ERROR, P_BAD_RESPONSE, P_SINK_FULL, P_SINK_UNAVAILABLE)


class PullConfigError(ValueError):
    pass


class _BadResponse(ValueError):
    pass


class _HTTPStatus(Exception):
    def __init__(self, code: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code = code
        self.retry_after = retry_after


def _escape_matcher_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(frozen=True)
class PullSettings:
    url: str  # Alertmanager base URL, e.g. http://alertmanager:9093 (a path prefix is kept)
    node_name: str
    # Not "node": in memhp's metrics and alerts that label is the NUMA node.
    node_label: str = "instance"
    extra_filters: tuple[str, ...] = ()  # more matchers, Alertmanager syntax: severity="page"
    receiver: str | None = None  # only alerts routed to receivers matching this regex
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT  # total, per poll
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    bearer_token_file: str | None = None
    basic_auth_file: str | None = None
    ca_file: str | None = None

    def validate(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise PullConfigError(f"--alertmanager.url must be an http(s) URL, got {self.url!r}")
        if not self.node_name:
            raise PullConfigError(
                "pull mode needs this node's name (--alertmanager.node-name or NODE_NAME): "
                "without it every node's alerts would match"
            )
        if not self.node_label:
            raise PullConfigError("--alertmanager.node-label must not be empty")
        if self.interval <= 0 or self.timeout <= 0:
            raise PullConfigError("poll interval and timeout must be positive")
        if not 1024 <= self.max_response_bytes <= MAX_RESPONSE_BYTES_LIMIT:
            raise PullConfigError(
                f"--alertmanager.max-response-bytes must be between 1024 and {MAX_RESPONSE_BYTES_LIMIT}"
            )
        if self.bearer_token_file and self.basic_auth_file:
            raise PullConfigError("give a bearer token file or a basic auth file for Alertmanager, not both")
        if self.ca_file and parts.scheme != "https":
            raise PullConfigError("--alertmanager.tls.ca-file needs an https URL")

    @property
    def matchers(self) -> list[str]:
        return [f'{self.node_label}="{_escape_matcher_value(self.node_name)}"', *self.extra_filters]

    def alerts_url(self) -> str:
        params: list[tuple[str, str]] = [
            ("active", "true"),
            ("silenced", "false"),
            ("inhibited", "false"),
            ("unprocessed", "true"),
        ]
        params += [("filter", m) for m in self.matchers]
        if self.receiver:
            params.append(("receiver", self.receiver))
        return self.url.rstrip("/") + "/api/v2/alerts?" + urlencode(params)


def add_pull_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("pull mode (poll Alertmanager's API)")
    g.add_argument(
        "--alertmanager.url",
        dest="alertmanager_url",
        metavar="URL",
        help="poll this Alertmanager (e.g. http://alertmanager:9093) for this node's alerts (pull mode; "
        "the webhook receiver keeps running)",
    )
    g.add_argument(
        "--alertmanager.node-label",
        dest="alertmanager_node_label",
        default="instance",
        metavar="LABEL",
        help="label that names the host an alert is about (default: instance; not 'node', which is the "
        "NUMA node in memhp's alerts)",
    )
    g.add_argument(
        "--alertmanager.node-name",
        dest="alertmanager_node_name",
        metavar="NAME",
        default=os.environ.get("NODE_NAME"),
        help="this node's value of that label (default: $NODE_NAME); required in pull mode",
    )
    g.add_argument(
        "--alertmanager.filter",
        dest="alertmanager_filters",
        action="append",
        default=[],
        metavar="MATCHER",
        help='extra matcher, Alertmanager syntax (severity="page"); repeatable',
    )
    g.add_argument(
        "--alertmanager.receiver",
        dest="alertmanager_receiver",
        metavar="REGEX",
        help="only alerts routed to receivers matching this regex",
    )
    g.add_argument(
        "--alertmanager.poll-interval",
        dest="alertmanager_poll_interval",
        type=duration,
        default=format_duration(DEFAULT_INTERVAL),
        metavar="DURATION",
        help=f"time between polls (default {format_duration(DEFAULT_INTERVAL)})",
    )
    g.add_argument(
        "--alertmanager.timeout",
        dest="alertmanager_timeout",
        type=duration,
        default=format_duration(DEFAULT_TIMEOUT),
        metavar="DURATION",
        help=f"total time for one poll: connect, headers and the whole answer (default {format_duration(DEFAULT_TIMEOUT)})",
    )
    g.add_argument(
        "--alertmanager.max-response-bytes",
        dest="alertmanager_max_response_bytes",
        type=int,
        default=DEFAULT_MAX_RESPONSE_BYTES,
        metavar="N",
        help=f"largest answer read; a larger one fails the poll (default {DEFAULT_MAX_RESPONSE_BYTES})",
    )
    g.add_argument(
        "--alertmanager.bearer-token-file",
        dest="alertmanager_bearer_token_file",
        metavar="FILE",
        help="send 'Authorization: Bearer <token>' read from FILE",
    )
    g.add_argument(
        "--alertmanager.basic-auth-file",
        dest="alertmanager_basic_auth_file",
        metavar="FILE",
        help="send basic auth from FILE (one line 'user:password')",
    )
    g.add_argument(
        "--alertmanager.tls.ca-file",
        dest="alertmanager_tls_ca_file",
        metavar="FILE",
        help="CA bundle to verify an https Alertmanager (default: the system's)",
    )


def pull_settings_from_args(args: argparse.Namespace) -> PullSettings | None:
    """None unless --alertmanager.url was given; PullConfigError if unusable."""
    if not args.alertmanager_url:
        return None
    settings = PullSettings(
        url=args.alertmanager_url,
        node_name=args.alertmanager_node_name or "",
        node_label=args.alertmanager_node_label,
        extra_filters=tuple(args.alertmanager_filters),
        receiver=args.alertmanager_receiver,
        interval=args.alertmanager_poll_interval,
        timeout=args.alertmanager_timeout,
        max_response_bytes=args.alertmanager_max_response_bytes,
        bearer_token_file=args.alertmanager_bearer_token_file,
        basic_auth_file=args.alertmanager_basic_auth_file,
        ca_file=args.alertmanager_tls_ca_file,
    )
    settings.validate()
    return settings


@dataclass(frozen=True)
class PollResult:
    result: str  # one of POLL_RESULTS
    firing: int = 0
    resolved: int = 0
    error: str = ""
    retry_after: float | None = None  # what a 429/503 asked for


# One staleness gauge per registry (a registry refuses a second metric of the same name); it reads
# the clock of the PullSource that last registered.
_STALENESS: weakref.WeakKeyDictionary[CollectorRegistry, Gauge] = weakref.WeakKeyDictionary()


def _staleness_gauge(registry: CollectorRegistry) -> Gauge:
    gauge = _STALENESS.get(registry)
    if gauge is None:
        gauge = _STALENESS[registry] = Gauge(
            "memhp_controller_alertmanager_poll_staleness_seconds",
            "Age of the last successful Alertmanager poll (pull mode); since start-up before the first.",
            registry=registry,
        )
    return gauge


def next_wait(interval: float, last_wait: float, result: PollResult, rand: random.Random | None = None) -> float:
    """Seconds until the next poll: the jittered interval after a success; after a failure, twice the
    last wait (at least one interval), at least a Retry-After, at most BACKOFF_INTERVALS intervals or
    BACKOFF_CAP seconds (never less than one interval)."""
    r = rand or random
    jitter = r.uniform(1 - JITTER, 1 + JITTER)
    if result.result == P_SUCCESS:
        return interval * jitter
    cap = max(interval, min(BACKOFF_INTERVALS * interval, BACKOFF_CAP))
    wait = max(2 * last_wait, interval) * jitter
    if result.retry_after is not None:
        wait = max(wait, result.retry_after)
    return min(wait, cap)


@dataclass
class _State:
    active: dict[tuple[str, str], Alert] = field(default_factory=dict)


class PullSource:
    def __init__(self, settings: PullSettings, sink: AlertSink, metrics: ControllerMetrics) -> None:
        settings.validate()
        self.settings = settings
        self.sink = sink
        self.metrics = metrics
        self._state = _State()
        self._lock = threading.Lock()  # poll_once from --once and run() must not interleave
        try:
            self._bearer = (
                SecretFile(settings.bearer_token_file, parse_bearer_token) if settings.bearer_token_file else None
            )
            self._basic = SecretFile(settings.basic_auth_file, parse_basic_auth) if settings.basic_auth_file else None
        except SecretFileError as e:
            raise PullConfigError(str(e)) from None
        self._ssl = ssl.create_default_context(cafile=settings.ca_file) if settings.url.startswith("https") else None
        for r in POLL_RESULTS:
            metrics.polls.labels(r)
        self._last_success = time.monotonic()  # staleness counts from start-up until the first success
        _staleness_gauge(metrics.registry).set_function(self.staleness)

    def staleness(self) -> float:
        """Seconds since the last successful poll (since start-up before the first)."""
        return time.monotonic() - self._last_success

    @property
    def active(self) -> dict[tuple[str, str], Alert]:
        """Occurrences firing at the last successful poll (a copy)."""
        with self._lock:
            return dict(self._state.active)

    # -- fetching
    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "memhp-controller"}
        if self._bearer is not None:
            headers["Authorization"] = "Bearer " + self._bearer.get().decode()
        elif self._basic is not None:
            user, password = self._basic.get()
            headers["Authorization"] = "Basic " + base64.b64encode(user + b":" + password).decode()
        return headers

    def fetch(self) -> list[dict[str, Any]]:
        """The raw alert objects; raises OSError, _HTTPStatus or _BadResponse, all within the total deadline.

        httpclient uses no proxy from the environment and follows no redirect: the
        credentials go to the URL configured, only."""
        try:
            resp = httpclient.request(
                self.settings.alerts_url(),
                headers=self._headers(),
                deadline=self.settings.timeout,
                max_bytes=self.settings.max_response_bytes,
                ssl_context=self._ssl,
            )
        except httpclient.ResponseTooLarge as e:
            raise _BadResponse(str(e)) from None
        if resp.status != 200:
            raise _HTTPStatus(resp.status, resp.reason, resp.retry_after(cap=BACKOFF_CAP))
        body = resp.body
        try:
            return parse_api_alerts(body)
        except PayloadError as e:
            raise _BadResponse(str(e)) from None

    def _to_alert(self, raw: Any) -> Alert | None:
        """An active, unsilenced, uninhibited alert of this node; None to skip; _BadResponse if malformed."""
        try:
            parsed = parse_api_alert(raw)
        except PayloadError as e:
            raise _BadResponse(f"malformed alert: {e}") from None
        f = parsed.fields
        # Defence in depth: the query already asked for exactly this.
        if not parsed.active or parsed.silenced or parsed.inhibited:
            return None
        if f.labels.get(self.settings.node_label) != self.settings.node_name:
            return None
        return f.alert(FIRING, SOURCE)

    # -- reconciling
    def poll_once(self) -> PollResult:
        with self._lock:
            result = self._poll_locked()
        self.metrics.polls.labels(result.result).inc()
        return result

    def _poll_locked(self) -> PollResult:
        try:
            raw_alerts = self.fetch()
            current: dict[tuple[str, str], Alert] = {}
            for raw in raw_alerts:
                alert = self._to_alert(raw)
                if alert is not None:
                    current[alert.occurrence] = alert
        except _BadResponse as e:
            log.warning("Alertmanager poll of %s: bad answer: %s", self.settings.url, e)
            return PollResult(P_BAD_RESPONSE, error=str(e))
        except _HTTPStatus as e:
            log.warning("Alertmanager poll of %s: %s", self.settings.url, e)
            return PollResult(P_ERROR, error=f"HTTP {e.code}", retry_after=e.retry_after)
        except (OSError, http.client.HTTPException, ValueError) as e:  # refused, timeout, TLS, DNS
            log.warning("Alertmanager poll of %s failed: %s", self.settings.url, e)
            return PollResult(P_ERROR, error=str(e))

        now = now_time()
        resolved = [
            Alert(
                name=a.name,
                status=RESOLVED,
                labels=a.labels,
                annotations={**a.annotations, RESOLVED_BY_ANNOTATION: SOURCE},
                starts_at=a.starts_at,
                ends_at=now,
                fingerprint=a.fingerprint,
                source=SOURCE,
            )
            for occ, a in self._state.active.items()
            if occ not in current
        ]
        firing = list(current.values())
        batch = resolved + firing  # a re-fired alert's old occurrence resolves before its new one fires
        if batch:
            try:
                self.sink.submit(batch)
            except SinkFull as e:
                log.warning("work queue full; %d alert(s) will be submitted again at the next poll", len(batch))
                return PollResult(P_SINK_FULL, error=str(e))
            except SinkUnavailable as e:
                log.warning("controller unavailable (%s); will retry at the next poll", e)
                return PollResult(P_SINK_UNAVAILABLE, error=str(e))
            for a in batch:
                self.metrics.alerts_received.labels(a.source, a.status).inc()
        self._state.active = current
        self._last_success = time.monotonic()
        self.metrics.last_poll_success.set_to_current_time()
        if resolved:
            log.info(
                "pull: %d alert occurrence(s) gone since the last poll, submitted as resolved: %s",
                len(resolved),
                ", ".join(a.name for a in resolved),
            )
        return PollResult(P_SUCCESS, firing=len(firing), resolved=len(resolved))

    def run(self, stop_event: threading.Event) -> None:
        """Poll until ``stop_event`` is set, jittered and backing off (see the module doc); never raises."""
        interval = self.settings.interval
        log.info("pull mode: polling %s every %gs (jittered)", self.settings.alerts_url(), interval)
        wait = random.uniform(0, interval)  # spread a fleet that started at once over one interval
        failures = 0
        while not stop_event.wait(wait):
            started = time.monotonic()
            try:
                result = self.poll_once()
            except Exception:  # a bug must not end polling: count it, log it, go on
                log.exception("Alertmanager poll crashed")
                self.metrics.polls.labels(P_ERROR).inc()
                result = PollResult(P_ERROR, error="crashed")
            failures = 0 if result.result == P_SUCCESS else failures + 1
            wait = next_wait(interval, wait if failures > 1 else interval / 2, result)
            if failures and wait > interval * (1 + JITTER):
                log.info("pull: %d failed poll(s) in a row; next poll in %.1fs", failures, wait)
            wait = max(0.0, wait - (time.monotonic() - started))
