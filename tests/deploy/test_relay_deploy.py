"""memhp-relay as shipped: the Alertmanager fleet example, the Kubernetes Deployment, Service and
PodDisruptionBudget, the systemd environment file; their arguments parse and their templates resolve."""

from __future__ import annotations

import json
import ssl
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from memhp.controller.relay.cli import get_parser
from memhp.controller.relay.hosts import AllowList
from memhp.controller.relay.template import TargetTemplate
from tests.helpers.alertmanager import Alertmanager, alertmanager_config, api_alert
from tests.helpers.deploy import EXAMPLES, SYSTEMD, env_file_words, k8s_doc, tool
from tests.helpers.tls import make_self_signed_cert

FLEET = EXAMPLES / "alertmanager-memhp-fleet.yml"
AM_WEB_CONFIG = EXAMPLES / "alertmanager-web-config.yml"


def test_amtool_accepts_the_fleet_example():
    r = subprocess.run([tool("amtool"), "check-config", str(FLEET)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _routes(labels: dict[str, str]) -> set[str]:
    r = subprocess.run(
        [
            tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={FLEET}",
            *[f"{k}={v}" for k, v in labels.items()],
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return set(r.stdout.strip().split(","))


def test_memhp_alerts_route_to_the_relay_grouped_by_node():
    assert _routes({"alertname": "MemhpBlocksLeftOffline", "instance": "n1", "node": "0"}) == {"memhp-relay"}
    assert _routes({"alertname": "SomethingElse", "instance": "n1"}) == {"default"}
    cfg = yaml.safe_load(FLEET.read_text())
    (route,) = [r for r in cfg["route"]["routes"] if r["receiver"] == "memhp-relay"]
    assert route["group_by"] == ["instance"]
    (recv,) = [r for r in cfg["receivers"] if r["name"] == "memhp-relay"]
    (wh,) = recv["webhook_configs"]
    assert wh["send_resolved"] is True and wh["max_alerts"] == 0
    assert wh["url"].startswith("https://") and wh["url"].endswith("/webhook/alertmanager")
    assert wh["http_config"]["authorization"]["credentials_file"] and wh["http_config"]["follow_redirects"] is False


def _relay_args(words: list[str]):
    args = get_parser().parse_args(words)
    assert args.web_auth_bearer_token_file and args.target_bearer_token_file
    # Credentials go only where an allow-list says; shipped EMPTY, so that the relay refuses to
    # start until it is set (as with its empty token), and never --target.allow-any.
    assert args.target_allow == [""] and not AllowList.parse(args.target_allow) and not args.target_allow_any
    return args


def test_kubernetes_relay_is_replicated_disruption_bounded_and_addressable():
    dep = k8s_doc("Deployment", "memhp-relay")
    assert dep["spec"]["replicas"] >= 2
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["memhp-relay"]
    args = _relay_args(c["args"])
    assert TargetTemplate(args.target_template).resolve({"instance": "node-1:10301"}) == (
        "http://node-1:10302/webhook/alertmanager"
    )
    assert c["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    pdb = k8s_doc("PodDisruptionBudget", "memhp-relay")
    assert pdb["spec"]["minAvailable"] == 1 and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = k8s_doc("Service", "memhp-relay")
    assert svc["spec"]["selector"].items() <= labels.items() and svc["spec"].get("clusterIP") != "None"
    # The controllers' token is the one the DaemonSet's controllers check; the relay's own fails closed.
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"]}
    assert secrets == {"relay-token": "memhp-relay-web", "controller-token": "memhp-controller-web"}
    assert k8s_doc("Secret", "memhp-relay-web")["stringData"]["token"] == ""
    # ... and the DaemonSet's controller is reachable where the template points.
    ds = k8s_doc("DaemonSet", "memhp")
    (ctrl,) = [x for x in ds["spec"]["template"]["spec"]["containers"] if x["name"] == "controller"]
    assert {"name": "controller", "containerPort": 10302, "hostPort": 10302, "protocol": "TCP"} in ctrl["ports"]


def test_systemd_relay_arguments_parse():
    words = env_file_words((SYSTEMD / "memhp-relay.default").read_text(), "MEMHP_RELAY_ARGS")
    args = _relay_args(words)
    assert args.web_auth_bearer_token_file.startswith("/run/credentials/memhp-relay.service/")
    unit = (SYSTEMD / "memhp-relay.service").read_text()
    for name in ("relay-token", "controller-token"):
        assert f"LoadCredential={name}:" in unit
    assert "DynamicUser=yes" in unit


@pytest.mark.prometheus
def test_alertmanager_web_config_example_refuses_unauthenticated_alerts(tmp_path):
    cfg = yaml.safe_load(AM_WEB_CONFIG.read_text())
    cert, key = make_self_signed_cert(tmp_path, "alertmanager")
    cfg["tls_server_config"].update(cert_file=str(cert), key_file=str(key))
    (user,) = cfg["basic_auth_users"]
    with Alertmanager(
        alertmanager_config(), tmp_path / "am", web_config=cfg, ca_file=cert, basic_auth=(user, "CHANGE-ME")
    ) as am:
        am.post_alerts([api_alert("MemhpBlocksLeftOffline", {"instance": "n1"})])  # with the credentials
        body = json.dumps([api_alert("MemhpBlocksLeftOffline", {"instance": "127.0.0.2"})]).encode()
        anonymous = urllib.request.Request(
            am.url + "/api/v2/alerts", data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(anonymous, timeout=10, context=ssl.create_default_context(cafile=str(cert)))
        assert e.value.code == 401
        assert [a["labels"]["instance"] for a in am.alerts()] == ["n1"]
