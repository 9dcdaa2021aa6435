"""Real Prometheus (the Debian package) for tests: started on a free loopback
port with a temporary TSDB, a generated scrape config and rule files; stopped
(and its process group killed) on exit.

    with running_prometheus(tmp_path, scrape_configs=[static_job("memhp", ["127.0.0.1:10301"])],
                            rule_files=[RULES, ALERTS]) as prom:
        prom.wait_scraped()                          # every target up
        prom.wait_rules_evaluated()                  # every rule group evaluated once
        prom.query('memhp_blocks')                   # /api/v1/query; PromQLError on a parse error
        prom.wait_for(lambda: prom.firing("MemhpBlocksLeftOffline"), timeout=60)

or as the pytest fixture ``prometheus_factory`` (end of this file; a plugin
in tests/conftest.py), which stops every server it started at teardown.

Nothing here sleeps for a fixed time: every wait polls with a deadline and
fails with what it last saw.  Only ``127.0.0.1`` is ever listened on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from .wait import free_port, wait_until  # free_port is re-exported for the tests that import it from here

PROMETHEUS = os.environ.get("MEMHP_PROMETHEUS", "prometheus")
PROMTOOL = os.environ.get("MEMHP_PROMTOOL", "promtool")
LOOPBACK = "127.0.0.1"


class PrometheusError(RuntimeError):
    """Prometheus did not start, or a wait ran out of time."""


class PromQLError(ValueError):
    """Prometheus refused a query (parse error, bad_data, execution error)."""

    def __init__(self, expr: str, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}\n  in: {expr}")
        self.expr, self.error_type, self.message = expr, error_type, message


def prometheus_binary() -> str | None:
    return shutil.which(PROMETHEUS)


def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    interval: float = 0.2,
    what: str = "condition",
    last: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``predicate`` until it returns something truthy; return it.  On
    timeout raise PrometheusError with ``what`` and (if given) ``last()``."""
    return wait_until(
        predicate,
        timeout,
        interval,
        what,
        last=last,
        catch=(OSError, urllib.error.URLError, PrometheusError, ValueError),
        error=PrometheusError,
    )


def static_job(
    name: str,
    targets: Sequence[str],
    *,
    labels: dict[str, str] | None = None,
    metrics_path: str = "/metrics",
    scheme: str = "http",
    bearer_token_file: str | None = None,
    instance: str | None = None,
    **extra: Any,
) -> dict:
    """One ``scrape_configs`` entry.  ``instance`` sets the instance label of
    every target (memhp's convention: the host name, the same for the exporter
    and the controller of one host, see docs/alerts.md)."""
    static: dict[str, Any] = {"targets": list(targets)}
    lbls = dict(labels or {})
    if instance is not None:
        lbls["instance"] = instance
    if lbls:
        static["labels"] = lbls
    job: dict[str, Any] = {"job_name": name, "metrics_path": metrics_path, "scheme": scheme, "static_configs": [static]}
    if bearer_token_file:
        job["authorization"] = {"type": "Bearer", "credentials_file": str(bearer_token_file)}
    job.update(extra)
    return job


@dataclass
class PrometheusServer:
    url: str
    port: int
    workdir: Path
    proc: subprocess.Popen
    config_file: Path
    log_file: Path
    rule_files: list[Path] = field(default_factory=list)

    # -- HTTP API
    def _get(self, path: str, params: dict | list | None = None, timeout: float = 10.0) -> Any:
        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                return json.loads(body)
            except ValueError:
                raise PrometheusError(f"GET {path}: HTTP {e.code}: {body[:500]!r}") from None

    def _data(self, path: str, params: dict | list | None = None, expr: str = "") -> Any:
        answer = self._get(path, params)
        if answer.get("status") != "success":
            raise PromQLError(expr or path, answer.get("errorType", "?"), answer.get("error", repr(answer)))
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """Instant query: the result list (vector / matrix entries, or
        ``[{"value": ...}]`` for a scalar).  Raises PromQLError if refused."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._data("/api/v1/query", params, expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        data = self._data(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
            expr,
        )
        return data["result"]

    def label_values(self, label: str, match: Sequence[str] = ()) -> list[str]:
        return self._data(f"/api/v1/label/{urllib.parse.quote(label)}/values", [("match[]", m) for m in match])

    def series(self, match: Sequence[str]) -> list[dict]:
        return self._data("/api/v1/series", [("match[]", m) for m in match])

    def targets(self) -> list[dict]:
        return self._data("/api/v1/targets", {"state": "active"})["activeTargets"]

    def rule_groups(self) -> list[dict]:
        return self._data("/api/v1/rules")["groups"]

    def alerts(self) -> list[dict]:
        return self._data("/api/v1/alerts")["alerts"]

    def firing(self, alertname: str, **labels: str) -> list[dict]:
        return [
            a
            for a in self.alerts()
            if a["labels"].get("alertname") == alertname
            and a["state"] == "firing"
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def alertmanagers(self) -> list[dict]:
        return self._data("/api/v1/alertmanagers")["activeAlertmanagers"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except (OSError, urllib.error.URLError):
            return False

    # -- waits
    def wait_for(
        self,
        predicate: Callable[[], Any],
        timeout: float = 60.0,
        what: str = "condition",
        last: Callable[[], Any] | None = None,
    ) -> Any:
        def checked() -> Any:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited with {self.proc.returncode}: {self.log_tail()}")
            return predicate()

        try:
            return wait_for(checked, timeout, what=what, last=last)
        except PrometheusError as e:
            if "prometheus exited" in str(e):
                raise
            raise PrometheusError(f"{e}\n--- prometheus log ---\n{self.log_tail()}") from None

    def wait_ready(self, timeout: float = 30.0) -> None:
        self.wait_for(self.ready, timeout, what=f"{self.url}/-/ready")

    def wait_scraped(self, timeout: float = 60.0, jobs: Sequence[str] | None = None, scrapes: int = 1) -> None:
        """Wait until every active target (of ``jobs``, if given) is up and has
        been scraped successfully ``scrapes`` times since this call."""
        since = time.time()
        seen: dict[str, int] = {}
        last_stamp: dict[str, str] = {}

        def check() -> bool:
            ts = [t for t in self.targets() if jobs is None or t["labels"].get("job") in jobs]
            if not ts:
                return False
            ok = True
            for t in ts:
                key = t["scrapeUrl"]
                if t["health"] != "up" or not t.get("lastScrape") or t["lastScrape"].startswith("0001"):
                    ok = False
                    continue
                stamp = t["lastScrape"]
                if _rfc3339(stamp) >= since and last_stamp.get(key) != stamp:
                    last_stamp[key] = stamp
                    seen[key] = seen.get(key, 0) + 1
                if seen.get(key, 0) < scrapes:
                    ok = False
            return ok

        self.wait_for(
            check,
            timeout,
            what=f"targets scraped {scrapes}x",
            last=lambda: [(t["scrapeUrl"], t["health"], t.get("lastError")) for t in self.targets()],
        )

    def wait_rules_evaluated(self, timeout: float = 60.0, evaluations: int = 1) -> None:
        """Wait until every rule group has been evaluated ``evaluations`` times
        since this call (each group's lastEvaluation moved)."""
        since = time.time()
        seen: dict[str, int] = {}
        last_stamp: dict[str, str] = {}

        def check() -> bool:
            groups = self.rule_groups()
            if not groups:
                return False
            for g in groups:
                key = f"{g['file']}:{g['name']}"
                stamp = g.get("lastEvaluation", "")
                if stamp and not stamp.startswith("0001") and _rfc3339(stamp) >= since and last_stamp.get(key) != stamp:
                    last_stamp[key] = stamp
                    seen[key] = seen.get(key, 0) + 1
            return all(seen.get(f"{g['file']}:{g['name']}", 0) >= evaluations for g in groups)

        self.wait_for(
            check,
            timeout,
            what=f"rule groups evaluated {evaluations}x",
            last=lambda: [
                (g["name"], g.get("lastEvaluation"), [r.get("lastError") for r in g["rules"] if r.get("lastError")])
                for g in self.rule_groups()
            ],
        )

    # -- lifecycle
    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def reload(self) -> None:
        """Re-read the config and rule files (SIGHUP)."""
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _rfc3339(stamp: str) -> float:
    """Prometheus' RFC 3339 timestamps (nanoseconds, Z or offset) as Unix time."""
    from datetime import datetime

    s = stamp.replace("Z", "+00:00")
    head, _, rest = s.partition(".")
    if rest:
        frac = "".join(c for c in rest if c.isdigit())
        tz = rest[len(frac) :]
        s = f"{head}.{frac[:6]}{tz}"
    return datetime.fromisoformat(s).timestamp()


def write_config(
    path: Path,
    scrape_configs: Sequence[dict],
    rule_files: Sequence[Path],
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    alertmanagers: Sequence[str] = (),
    alertmanager_config: dict | None = None,
    external_labels: dict | None = None,
) -> None:
    cfg: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": list(scrape_configs),
    }
    if external_labels:
        cfg["global"]["external_labels"] = dict(external_labels)
    if alertmanagers or alertmanager_config:
        am = dict(alertmanager_config or {})
        if alertmanagers:
            am.setdefault("static_configs", []).append({"targets": list(alertmanagers)})
        cfg["alerting"] = {"alertmanagers": [am]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def check_config(config_file: Path) -> None:
    """``promtool check config`` (also checks the rule files it names)."""
    r = subprocess.run([PROMTOOL, "check", "config", str(config_file)], capture_output=True, text=True)
    if r.returncode != 0:
        raise PrometheusError(f"promtool check config failed:\n{r.stdout}{r.stderr}")


def start_prometheus(
    workdir: Path,
    scrape_configs: Sequence[dict],
    rule_files: Sequence[Path] = (),
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    alertmanagers: Sequence[str] = (),
    alertmanager_config: dict | None = None,
    external_labels: dict | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout: float = 30.0,
    attempts: int = 3,
    tsdb_path: Path | None = None,
    retention: str = "1d",
) -> PrometheusServer:
    """Start Prometheus on a free 127.0.0.1 port, TSDB and config in ``workdir``;
    return once /-/ready answers.  The caller must ``stop()`` it (or use
    :func:`running_prometheus` / the fixture).

    ``tsdb_path``: use this (pre-built, e.g. backfilled) TSDB directory instead
    of a fresh one; give a ``retention`` that covers its blocks' time range."""
    binary = prometheus_binary()
    if binary is None:
        raise PrometheusError(f"{PROMETHEUS} not found (Debian package prometheus; scripts/setup.sh installs it)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    write_config(
        config_file,
        scrape_configs,
        rule_files,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        alertmanagers=alertmanagers,
        alertmanager_config=alertmanager_config,
        external_labels=external_labels,
    )
    check_config(config_file)
    last_error = ""
    for attempt in range(attempts):
        port = free_port()
        tsdb = Path(tsdb_path) if tsdb_path is not None else workdir / f"tsdb-{attempt}"
        log_file = workdir / f"prometheus-{attempt}.log"
        argv = [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address={LOOPBACK}:{port}",
            "--web.enable-lifecycle",
            f"--storage.tsdb.retention.time={retention}",
            "--log.level=info",
            *extra_args,
        ]
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                start_new_session=True,
            )
        server = PrometheusServer(
            url=f"http://{LOOPBACK}:{port}",
            port=port,
            workdir=workdir,
            proc=proc,
            config_file=config_file,
            log_file=log_file,
            rule_files=list(map(Path, rule_files)),
        )
        try:
            server.wait_ready(ready_timeout)
            return server
        except PrometheusError as e:
            last_error = str(e)
            server.stop()
            if "address already in use" not in server.log_tail(200):
                break
    raise PrometheusError(f"prometheus did not start: {last_error}")


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, scrape_configs: Sequence[dict], rule_files: Sequence[Path] = (), **kwargs: Any
) -> Iterator[PrometheusServer]:
    server = start_prometheus(workdir, scrape_configs, rule_files, **kwargs)
    try:
        yield server
    finally:
        server.stop()


# The fixture: a plugin registered in tests/conftest.py's pytest_plugins.
@pytest.fixture
def prometheus_factory(tmp_path_factory):
    """``start(scrape_configs, rule_files=(), **kwargs) -> PrometheusServer``;
    fails the test when the prometheus binary is missing (a broken
    set-up, never a silent skip); stops every server at teardown."""
    if prometheus_binary() is None:
        pytest.fail(f"{PROMETHEUS} not installed: run scripts/setup.sh (Debian package prometheus)", pytrace=False)
    started: list[PrometheusServer] = []

    def start(scrape_configs: Sequence[dict], rule_files: Sequence[Path] = (), **kwargs: Any) -> PrometheusServer:
        server = start_prometheus(tmp_path_factory.mktemp("prometheus"), scrape_configs, rule_files, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
