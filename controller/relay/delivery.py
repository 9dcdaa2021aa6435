"""Deliver alerts to one target: deadline, bounded retries (tenacity), bounded queue.

Each target (one controller URL) has at most one delivery in flight, so a
burst never opens more than one connection to a node, and at most
``queue_size`` more waiting; over that, the delivery fails at once
(``queue_full``) and the relay answers Alertmanager 503.  A delivery is
attempted up to ``max_attempts`` times within ``deadline`` seconds in all;
connection errors, timeouts, 408, 429 and 5xx are retried (a 429/503's
``Retry-After`` is honoured as long as it fits in the deadline); other 4xx
answers (wrong credentials, payload refused) are not, and fail at once.
Target state exists only while a delivery is queued or in flight: the relay
keeps nothing between requests.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from tenacity import RetryCallState, Retrying, retry_if_exception_type

from memhp.backoff import exponential
from memhp.controller import httpclient
from memhp.controller.alert import FIRING, Alert
from memhp.web.secrets import SecretFile, parse_basic_auth, parse_bearer_token

from .batching import alert_doc, batches
from .metrics import RelayMetrics
from .tokens import derive_token, parse_token_key

log = logging.getLogger(__name__)

MIN_LEFT = 0.05  # seconds: with less than this left before the deadline, no attempt is started
MAX_ANSWER_BYTES = 64 * 1024

# delivery_failures{reason}
F_QUEUE_FULL = "queue_full"
F_DEADLINE = "deadline"
F_CONNECT = "connection"
F_HTTP_RETRYABLE = "http_retryable"  # 408/429/5xx still, after the last attempt
F_HTTP_REFUSED = "http_refused"  # another 4xx: not retried
F_ABANDONED = "abandoned"  # Alertmanager hung up before the delivery (or its next attempt) started
FAILURE_REASONS = (F_QUEUE_FULL, F_DEADLINE, F_CONNECT, F_HTTP_RETRYABLE, F_HTTP_REFUSED, F_ABANDONED)

# Between attempts: 0.2 s, 0.4 s, ... at most 2 s, each drawn from its upper half
# so that a relay's retries to many nodes do not arrive together.
RETRY_BACKOFF = exponential(0.2, 2.0, spread=0.5)


def never_abandoned() -> bool:
    return False


Abandoned = Callable[[], bool]  # whether the notification's sender has hung up


@dataclass(frozen=True)
class DeliverySettings:
    # Per target and delivery, from the notification's arrival, retries included: with the 1 s of a
    # notification with several targets, below Alertmanager's shortest flush timeout (10 s), so that
    # a first attempt is answered before Alertmanager gives up on it (docs/relay.md, "Answering in time").
    deadline: float = 8.0
    attempt_timeout: float = 5.0  # one HTTP request, at most
    max_attempts: int = 3
    queue_size: int = 8  # deliveries waiting per target, besides the one in flight
    bearer_token_file: str | None = None
    basic_auth_file: str | None = None
    token_key_file: str | None = None  # per-node tokens (tokens.py)
    ca_file: str | None = None

    @property
    def sends_credentials(self) -> bool:
        return bool(self.bearer_token_file or self.basic_auth_file or self.token_key_file)

    def validate(self) -> None:
        if self.deadline <= 0 or self.attempt_timeout <= 0:
            raise ValueError("the delivery deadline and attempt timeout must be positive")
        if not 1 <= self.max_attempts <= 20:
            raise ValueError("--target.max-attempts must be between 1 and 20")
        if not 0 <= self.queue_size <= 10_000:
            raise ValueError("--target.queue-size must be between 0 and 10000")
        given = [f for f in (self.bearer_token_file, self.basic_auth_file, self.token_key_file) if f]
        if len(given) > 1:
            raise ValueError(
                "give one of --target.bearer-token-file, --target.basic-auth-file, --target.token-key-file"
            )


class DeliveryFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Retryable(Exception):
    def __init__(self, reason: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _Target:
    lock: threading.Lock
    pending: int = 0  # queued or in flight


def webhook_payload(alerts: Sequence[Alert], receiver: str) -> bytes:
    """An Alertmanager webhook body (version 4) holding these alerts, as the controller reads it."""
    firing = any(a.status == FIRING for a in alerts)
    common = dict(alerts[0].labels) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a.labels.get(k) == v}
    doc: dict[str, Any] = {
        "version": "4",
        "receiver": receiver,
        "status": "firing" if firing else "resolved",
        "groupLabels": {},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "",
        "truncatedAlerts": 0,
        "alerts": [alert_doc(a) for a in alerts],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class Deliverer:
    def __init__(
        self,
        settings: DeliverySettings,
        metrics: RelayMetrics,
        receiver: str = "memhp-relay",
        resolver: httpclient.Resolver = httpclient.getaddrinfo_tcp,
    ) -> None:
        settings.validate()
        self._resolver = resolver
        self.settings = settings
        self.metrics = metrics
        self.receiver = receiver
        self._bearer = (
            SecretFile(settings.bearer_token_file, parse_bearer_token) if settings.bearer_token_file else None
        )
        self._basic = SecretFile(settings.basic_auth_file, parse_basic_auth) if settings.basic_auth_file else None
        self._token_key = SecretFile(settings.token_key_file, parse_token_key) if settings.token_key_file else None
        # CERT_REQUIRED and check_hostname: the certificate must name the URL's host, which
        # httpclient passes as server_hostname even though it resolves the name itself.
        self._ssl = ssl.create_default_context(cafile=settings.ca_file)
        self._targets: dict[str, _Target] = {}
        self._lock = threading.Lock()
        self._pending = 0
        for reason in FAILURE_REASONS:
            metrics.delivery_failures.labels(reason)

    # -- per-target queue
    def _enter(self, url: str) -> _Target:
        with self._lock:
            target = self._targets.get(url)
            if target is None:
                target = self._targets[url] = _Target(threading.Lock())
            if target.pending > self.settings.queue_size:
                raise DeliveryFailed(F_QUEUE_FULL, f"{target.pending} deliveries to {url} already queued")
            target.pending += 1
            self._pending += 1
            self._publish()
            return target

    def _leave(self, url: str, target: _Target) -> None:
        with self._lock:
            target.pending -= 1
            self._pending -= 1
            if target.pending == 0:
                self._targets.pop(url, None)
            self._publish()

    def _publish(self) -> None:
        self.metrics.queue_depth.set(self._pending)
        self.metrics.targets.set(len(self._targets))
        self.metrics.queue_depth_max.set(max((t.pending for t in self._targets.values()), default=0))

    # -- delivery
    def deliver(
        self, url: str, alerts: Sequence[Alert], deadline: float | None = None, abandoned: Abandoned = never_abandoned
    ) -> None:
        """Deliver ``alerts`` to ``url`` or raise DeliveryFailed (after retries, by the deadline).

        ``deadline`` is absolute (``time.monotonic()``), set when the notification
        arrived, so that time spent queued counts; by default ``settings.deadline`` from now.
        ``abandoned`` is asked before every attempt: once the sender has hung up, nothing more is
        sent (Alertmanager would count the notification as failed whatever the node did with it).
        """
        start = time.monotonic()
        end = start + self.settings.deadline if deadline is None else deadline
        result = "failure"
        try:
            target = self._enter(url)
        except DeliveryFailed as e:
            self.metrics.delivery_failures.labels(e.reason).inc()
            raise
        try:
            if not target.lock.acquire(timeout=max(0.0, end - time.monotonic())):
                raise DeliveryFailed(F_DEADLINE, f"queued for {url} past the deadline")
            try:
                for batch in batches(alerts):
                    if end - time.monotonic() < MIN_LEFT:  # never connect once the deadline has passed
                        raise DeliveryFailed(F_DEADLINE, f"{url}: deadline passed before the delivery started")
                    self._deliver_with_retries(url, webhook_payload(batch, self.receiver), end, abandoned)
                    for a in batch:
                        self.metrics.alerts_delivered.labels(a.status).inc()
            finally:
                target.lock.release()
            result = "success"
        except DeliveryFailed as e:
            self.metrics.delivery_failures.labels(e.reason).inc()
            raise
        finally:
            self._leave(url, target)
            self.metrics.delivery_duration.labels(result).observe(time.monotonic() - start)

    def _headers(self, url: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "memhp-relay"}
        if self._token_key is not None:
            headers["Authorization"] = "Bearer " + derive_token(self._token_key.get(), urlsplit(url).hostname or "")
        elif self._bearer is not None:
            headers["Authorization"] = "Bearer " + self._bearer.get().decode()
        elif self._basic is not None:
            user, password = self._basic.get()
            headers["Authorization"] = "Basic " + base64.b64encode(user + b":" + password).decode()
        return headers

    def _deliver_with_retries(self, url: str, body: bytes, end: float, abandoned: Abandoned) -> None:
        s = self.settings

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= s.max_attempts or end - time.monotonic() < MIN_LEFT

        def wait(state: RetryCallState) -> float:
            backoff = RETRY_BACKOFF(state)
            exc = state.outcome.exception() if state.outcome is not None else None
            if isinstance(exc, _Retryable) and exc.retry_after is not None:
                backoff = max(backoff, exc.retry_after)
            return max(0.0, min(backoff, end - time.monotonic() - MIN_LEFT))

        retrying = Retrying(stop=stop, wait=wait, retry=retry_if_exception_type(_Retryable), reraise=True)
        try:
            for attempt in retrying:
                with attempt:
                    if abandoned():
                        raise DeliveryFailed(F_ABANDONED, f"{url}: Alertmanager hung up first; not sent")
                    self._attempt(url, body, min(s.attempt_timeout, max(0.01, end - time.monotonic())))
        except _Retryable as e:
            reason = e.reason if time.monotonic() < end - MIN_LEFT else F_DEADLINE
            raise DeliveryFailed(reason, f"{url}: {e}") from None

    def _attempt(self, url: str, body: bytes, timeout: float) -> None:
        try:
            resp = httpclient.request(
                url,
                method="POST",
                body=body,
                headers=self._headers(url),
                deadline=timeout,
                max_bytes=MAX_ANSWER_BYTES,
                ssl_context=self._ssl,
                resolver=self._resolver,
            )
        except httpclient.DeadlineExceeded as e:
            self.metrics.delivery_attempts.labels("timeout").inc()
            raise _Retryable(F_DEADLINE, str(e)) from None
        except (OSError, ValueError, http.client.HTTPException) as e:  # refused, reset, TLS, bad answer, too large
            self.metrics.delivery_attempts.labels("error").inc()
            raise _Retryable(F_CONNECT, f"{type(e).__name__}: {e}") from None
        code = resp.status
        self.metrics.delivery_attempts.labels(str(code)).inc()
        if 200 <= code < 300:
            return
        detail = resp.body[:200].decode("utf-8", "replace").strip()
        if code in (408, 429) or code >= 500:
            raise _Retryable(F_HTTP_RETRYABLE, f"HTTP {code}: {detail}", resp.retry_after(cap=self.settings.deadline))
        raise DeliveryFailed(F_HTTP_REFUSED, f"{url}: HTTP {code}: {detail}")
