"""deploy/examples/: promtool and amtool accept them, and they match the
alerts' jobs, labels and severities and the controller's receiver."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from deploy.generate import rule_files
from tests.helpers.deploy import EXAMPLES, SYSTEMD, env_file_words, tool

PROM = EXAMPLES / "prometheus.yml"
AM = EXAMPLES / "alertmanager.yml"
AM_RECEIVER_EXAMPLE = EXAMPLES / "alertmanager-memhp.yml"


def _alerts() -> list[dict]:
    return [r for _, f in rule_files() for g in f["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_the_scrape_config(tmp_path):
    text = PROM.read_text()
    cfg = yaml.safe_load(text)
    # Credential files must exist for promtool: create them, in a temporary directory.
    for cred in set(re.findall(r"credentials_file: (\S+)", text)):
        local = tmp_path / cred.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("token\n")
        text = text.replace(cred, str(local))
    # Rule files are relative to the config's directory: keep them resolvable from the copy.
    for rf in cfg["rule_files"]:
        text = text.replace(rf, str((PROM.parent / rf).resolve()))
    f = tmp_path / "prometheus.yml"
    f.write_text(text)
    r = subprocess.run([tool("promtool"), "check", "config", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_scrape_config_loads_every_rule_file_in_alerts():
    cfg = yaml.safe_load(PROM.read_text())
    loaded = sorted((PROM.parent / rf).resolve() for rf in cfg["rule_files"])
    assert loaded == sorted(p.resolve() for p, _ in rule_files())


def test_jobs_are_the_ones_the_alerts_select():
    cfg = yaml.safe_load(PROM.read_text())
    jobs = {j["job_name"] for j in cfg["scrape_configs"]}
    wanted = {m for a in _alerts() for m in re.findall(r'job="([^"]+)"', a["expr"])}
    assert wanted and wanted <= jobs, (wanted, jobs)


def test_instance_is_the_bare_host_name_on_both_jobs():
    # The alerts join exporter and controller series on (instance); pull mode filters on it.
    cfg = yaml.safe_load(PROM.read_text())
    names = {}
    for job in cfg["scrape_configs"]:
        [relabel] = [r for r in job["relabel_configs"] if r.get("target_label") == "instance"]
        assert relabel["source_labels"] == ["__address__"]
        for target in job["static_configs"][0]["targets"]:
            m = re.fullmatch(relabel["regex"], target)  # Prometheus anchors relabel regexes
            assert m, target
            names.setdefault(job["job_name"], set()).add(m.expand(relabel["replacement"].replace("$1", r"\1")))
    assert len(set(map(frozenset, names.values()))) == 1, names
    assert all(":" not in n for n in next(iter(names.values())))


def test_controller_job_scrapes_with_the_webhook_token():
    cfg = yaml.safe_load(PROM.read_text())
    job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "memhp-controller")
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]


@pytest.mark.parametrize("path", [AM, AM_RECEIVER_EXAMPLE], ids=lambda p: p.name)
def test_amtool_accepts_the_alertmanager_configs(path):
    r = subprocess.run([tool("amtool"), "check-config", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_amtool_is_not_vacuous(tmp_path):
    bad = tmp_path / "am.yml"
    bad.write_text(AM.read_text().replace("receiver: work-queue", "receiver: no-such-receiver"))
    r = subprocess.run([tool("amtool"), "check-config", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0


def _routes_test(labels: dict[str, str]) -> set[str]:
    r = subprocess.run(
        [tool("amtool"), "config", "routes", "test", f"--config.file={AM}", *[f"{k}={v}" for k, v in labels.items()]],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return set(r.stdout.strip().split(","))


def test_every_alert_routes_by_severity_and_to_the_controller():
    routed = {"critical": "pager", "warning": "work-queue", "info": "hints"}
    alerts = _alerts()
    assert alerts
    for a in alerts:
        sev = a["labels"]["severity"]
        got = _routes_test({"alertname": a["alert"], "severity": sev, "instance": "host-a", "node": "0"})
        assert got == {"memhp-controller", routed[sev]}, (a["alert"], got)
    assert _routes_test({"alertname": "SomethingElse", "severity": "warning"}) == {"work-queue"}


def test_controller_route_and_receiver_are_the_receiver_examples():
    full = yaml.safe_load(AM.read_text())
    example = yaml.safe_load(AM_RECEIVER_EXAMPLE.read_text())

    def controller_parts(cfg):
        route = [r for r in cfg["route"]["routes"] if r["receiver"] == "memhp-controller"]
        recv = [r for r in cfg["receivers"] if r["name"] == "memhp-controller"]
        assert len(route) == 1 and len(recv) == 1
        return route[0], recv[0]

    assert controller_parts(full) == controller_parts(example)
    _, recv = controller_parts(full)
    wh = recv["webhook_configs"][0]
    assert wh["send_resolved"] is True
    assert wh["http_config"]["authorization"]["type"] == "Bearer"
    # The same token file the controller's unit reads (single host: one file, both readers).
    words = env_file_words((SYSTEMD / "memhp-controller.default").read_text(), "MEMHP_CONTROLLER_ARGS")
    assert f"--web.auth.bearer-token-file={wh['http_config']['authorization']['credentials_file']}" in words
    assert wh["url"].endswith("/webhook/alertmanager")


def test_inhibit_rules_name_real_alerts():
    names = {a["alert"] for a in _alerts()}
    for rule in yaml.safe_load(AM.read_text())["inhibit_rules"]:
        for m in rule["source_matchers"] + rule["target_matchers"]:
            label, op, value = re.fullmatch(r'(\w+)(=~|=)"(.*)"', m).groups()
            assert label == "alertname"
            hits = {n for n in names if (re.fullmatch(value, n) if op == "=~" else n == value)}
            assert hits, m
            if op == "=~":
                assert len(hits) == len(value.split("|")), m
