"""Start the real Alertmanager (Debian's ``prometheus-alertmanager``) on loopback for tests.

Usage::

    cfg = alertmanager_config(webhook_receiver(url, bearer_token_file=tok))
    with Alertmanager(cfg, tmp_path) as am:       # amtool check-config runs first
        am.post_alerts([api_alert("MemoryBlocksOffline", {"node": "n1"})])
        am.wait_for_alerts(lambda alerts: len(alerts) == 1)

Every instance gets a free port on 127.0.0.1, its own storage directory,
clustering disabled (``--cluster.listen-address=``) and a log file; ``stop()``
(or leaving the ``with``) terminates it, then kills it if it lingers.  The
``alertmanager`` pytest fixture below hands out a factory and stops every
instance it started.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from .wait import free_port, wait_until

ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"

# Short enough for quick tests, long enough not to spin: first notification after
# group_wait, changes after group_interval, repeats after repeat_interval.
FAST_ROUTE = {"group_wait": "200ms", "group_interval": "1s", "repeat_interval": "2s"}


def have_alertmanager() -> bool:
    return Path(ALERTMANAGER).exists() and Path(AMTOOL).exists()


def _require_alertmanager() -> None:
    # Real Alertmanager is part of what these tests prove: its absence is a
    # broken set-up, reported as a failure, never a silent skip.
    if not have_alertmanager():
        pytest.fail(
            f"{ALERTMANAGER} or {AMTOOL} missing: run scripts/setup.sh (Debian package prometheus-alertmanager)",
            pytrace=False,
        )


# Kept as a marker so test modules can say what they need; the check itself
# runs in the alertmanager fixture.
requires_alertmanager = pytest.mark.prometheus


def rfc3339(dt: datetime | None = None) -> str:
    dt = (dt or datetime.now(UTC)).astimezone(UTC)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


def api_alert(
    name: str,
    labels: Mapping[str, str] | None = None,
    *,
    annotations: Mapping[str, str] | None = None,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
    generator_url: str = "http://127.0.0.1/test",
) -> dict[str, Any]:
    """One alert in the shape ``POST /api/v2/alerts`` takes (a postableAlert).

    Like Prometheus, it always carries ``startsAt`` (now unless given): resend
    the same dict through :func:`resolved` to end that very occurrence.
    """
    alert: dict[str, Any] = {
        "labels": {"alertname": name, **(labels or {})},
        "annotations": dict(annotations or {}),
        "generatorURL": generator_url,
        "startsAt": rfc3339(starts_at),
    }
    if ends_at is not None:
        alert["endsAt"] = rfc3339(ends_at)
    return alert


def webhook_receiver(
    name: str,
    url: str,
    *,
    bearer_token_file: str | Path | None = None,
    basic_auth: tuple[str, str | Path] | None = None,
    ca_file: str | Path | None = None,
    insecure_skip_verify: bool = False,
    send_resolved: bool = True,
) -> dict[str, Any]:
    """A receiver with one webhook_config; secrets always by file (``*_file`` fields)."""
    http_config: dict[str, Any] = {"follow_redirects": False}
    if bearer_token_file is not None:
        http_config["authorization"] = {"type": "Bearer", "credentials_file": str(bearer_token_file)}
    if basic_auth is not None:
        http_config["basic_auth"] = {"username": basic_auth[0], "password_file": str(basic_auth[1])}
    if ca_file is not None or insecure_skip_verify:
        tls: dict[str, Any] = {"insecure_skip_verify": insecure_skip_verify}
        if ca_file is not None:
            tls["ca_file"] = str(ca_file)
        http_config["tls_config"] = tls
    return {
        "name": name,
        "webhook_configs": [{"url": url, "send_resolved": send_resolved, "max_alerts": 0, "http_config": http_config}],
    }


def alertmanager_config(
    *receivers: dict[str, Any],
    group_by: list[str] | None = None,
    inhibit_rules: list[dict[str, Any]] | None = None,
    routes: list[dict[str, Any]] | None = None,
    **route_overrides: Any,
) -> dict[str, Any]:
    """A complete config; the first receiver is the default route's (a blackhole if none given)."""
    receivers_list = list(receivers) or [{"name": "blackhole"}]
    route: dict[str, Any] = {
        "receiver": receivers_list[0]["name"],
        "group_by": group_by or ["alertname", "node"],
        **FAST_ROUTE,
        **route_overrides,
    }
    if routes:
        route["routes"] = routes
    config: dict[str, Any] = {"route": route, "receivers": receivers_list}
    if inhibit_rules:
        config["inhibit_rules"] = inhibit_rules
    return config


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for ``basic_auth_users`` in Alertmanager's web config (libcrypt via the
    stdlib ``crypt`` module, deprecated but present in Python 3.11/3.12)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # Python >= 3.13: a broken set-up for these tests, not a skip
            pytest.fail("no crypt module (Python 3.11/3.12's stdlib) to make a bcrypt hash", pytrace=False)
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


def check_config(path: str | Path) -> str:
    """``amtool check-config``; AssertionError with amtool's output when it refuses the file."""
    proc = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"amtool check-config {path} failed:\n{proc.stdout}{proc.stderr}")
    return proc.stdout


class Alertmanager:
    def __init__(
        self,
        config: Mapping[str, Any] | str,
        workdir: Path,
        *,
        port: int | None = None,
        web_config: Mapping[str, Any] | None = None,
        ca_file: str | Path | None = None,
        basic_auth: tuple[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        """``web_config`` is Alertmanager's --web.config.file (tls_server_config, basic_auth_users);
        ``ca_file``/``basic_auth`` are what this helper's own requests then need."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "alertmanager.yml"
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        self.config_path.write_text(text)
        self.web_config_path: Path | None = None
        if web_config is not None:
            self.web_config_path = self.workdir / "web-config.yml"
            self.web_config_path.write_text(yaml.safe_dump(dict(web_config), sort_keys=False))
        self.storage = self.workdir / "data"
        self.log_path = self.workdir / "alertmanager.log"
        self._fixed_port = port
        self.port = port or 0
        self.extra_args = extra_args
        self.scheme = "http"
        self.proc: subprocess.Popen | None = None
        self._log: Any = None
        self.headers: dict[str, str] = {}
        self.ssl_context = None
        if web_config is not None and "tls_server_config" in web_config:
            self.scheme = "https"
            self.ssl_context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if basic_auth is not None:
            token = base64.b64encode(f"{basic_auth[0]}:{basic_auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        handlers: list[Any] = [urllib.request.ProxyHandler({})]
        if self.ssl_context is not None:
            handlers.append(urllib.request.HTTPSHandler(context=self.ssl_context))
        self._opener = urllib.request.build_opener(*handlers)

    # -- life cycle
    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Alertmanager:
        check_config(self.config_path)
        for _attempt in range(3):
            self.port = self._fixed_port or free_port()
            if self._start_once(timeout):
                return self
            if self._fixed_port or "address already in use" not in self.log_text():
                break
        raise AssertionError(f"Alertmanager did not become ready; log:\n{self.log_text()[-4000:]}")

    def _start_once(self, timeout: float) -> bool:
        self.storage.mkdir(exist_ok=True)
        args = [
            ALERTMANAGER,
            f"--config.file={self.config_path}",
            f"--storage.path={self.storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=debug",
            *self.extra_args,
        ]
        if self.web_config_path is not None:
            args.append(f"--web.config.file={self.web_config_path}")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._close_log()
                return False
            try:
                if self._request("GET", "/-/ready", timeout=1.0)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Alertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- HTTP API
    def _request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **self.headers} if data is not None else dict(self.headers)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            resp = self._opener.open(req, timeout=timeout)
            with resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self._request(method, path, body)
        if status // 100 != 2:
            raise AssertionError(f"Alertmanager {method} {path}: HTTP {status}: {data[:500]!r}")
        return json.loads(data) if data else None

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        self.api("POST", "/api/v2/alerts", alerts)

    def alerts(self, **params: str) -> list[dict[str, Any]]:
        from urllib.parse import urlencode

        query = ("?" + urlencode(params, doseq=True)) if params else ""
        return self.api("GET", "/api/v2/alerts" + query)

    def wait_for_alerts(
        self,
        predicate: Callable[[list[dict[str, Any]]], object],
        timeout: float = 15.0,
        desc: str = "alerts in Alertmanager",
        **params: str,
    ) -> list[dict[str, Any]]:
        """Poll ``GET /api/v2/alerts`` (with ``params``) until ``predicate`` holds; return that answer."""
        seen: list[list[dict[str, Any]]] = []

        def check() -> bool:
            alerts = self.alerts(**params)
            seen.append(alerts)
            return bool(predicate(alerts))

        wait_until(check, timeout=timeout, desc=desc)
        return seen[-1]

    def add_silence(self, *matchers: str, duration: str = "1h", comment: str = "memhp test") -> str:
        """``amtool silence add``; returns the silence id."""
        proc = subprocess.run(
            [
                AMTOOL,
                f"--alertmanager.url={self.url}",
                "silence",
                "add",
                f"--duration={duration}",
                f"--comment={comment}",
                "--author=memhp-tests",
                *matchers,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"amtool silence add failed: {proc.stdout}{proc.stderr}")
        return proc.stdout.strip()

    def expire_silence(self, silence_id: str) -> None:
        proc = subprocess.run(
            [AMTOOL, f"--alertmanager.url={self.url}", "silence", "expire", silence_id],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode != 0:
            raise AssertionError(f"amtool silence expire failed: {proc.stdout}{proc.stderr}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples (from Alertmanager's own /metrics) matching ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        status, data = self._request("GET", "/metrics")
        assert status == 200, status
        total = 0.0
        for family in text_string_to_metric_families(data.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[..., Alertmanager]]:
    """Factory fixture: ``am = alertmanager(config, **kwargs)`` starts one; all are stopped at teardown."""
    _require_alertmanager()
    started: list[Alertmanager] = []

    def start(config: Mapping[str, Any] | str, **kwargs: Any) -> Alertmanager:
        am = Alertmanager(config, tmp_path / f"am{len(started)}", **kwargs)
        started.append(am)
        return am.start()

    yield start
    for am in started:
        am.stop()


def resolved(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The same alert (same startsAt) with ``endsAt`` = now: posting it resolves that occurrence,
    as Prometheus does when an alerting rule stops firing."""
    return {**alert, "endsAt": rfc3339()}
