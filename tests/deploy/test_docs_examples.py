"""Every YAML example in README.md and docs/ is checked by the real program that reads it.

A user copies examples. One that names an alert memhp does not ship gives a controller that never
acts (issue 21: the policy example named three such alerts and `severity="page"`). So each
```yaml block is classified by what it configures and handed to that program: policies to
`memhp-controller check-config` (no warning allowed), rule files to `promtool check rules`,
Prometheus configs to `promtool check config`, Alertmanager configs to `amtool check-config`
(a fragment is completed with the receivers it names), web configs to memhp's own loader. A block
of another kind fails the test until it is classified here, so a new example cannot slip by.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
import yaml

from memhp.web.config import parse_web_config
from tests.helpers.deploy import tool
from tests.helpers.tls import make_self_signed_cert

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Blocks no memhp-side program reads: Kubernetes overlays (kustomize is not installed here; the
# manifests they patch are tested in tests/deploy/), recognised by their first key.
NOT_CHECKED = {"resources": "a kustomize overlay"}


def examples() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"^```ya?ml\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{doc.relative_to(ROOT)}:{line}", m.group(1)))
    return out


def kind(doc: dict) -> str:
    keys = set(doc)
    if keys & {"rules", "guards", "controller", "fleet", "retry"}:
        return "policy"
    if "groups" in keys:
        return "rules"
    if keys & {"scrape_configs", "rule_files", "alerting", "global"}:
        return "prometheus"
    if keys & {"route", "receivers", "inhibit_rules"}:
        return "alertmanager"
    if keys & {"tls_server_config", "basic_auth_users", "http_server_config"}:
        return "web"
    first = next(iter(doc), "")
    return "skip" if first in NOT_CHECKED else f"unclassified (keys {sorted(keys)})"


def check_policy(text: str, tmp: Path) -> None:
    f = tmp / "policy.yaml"
    f.write_text(text)
    r = subprocess.run(
        [sys.executable, "-m", "memhp.controller.cli", "--config.file", str(f), "check-config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr


def check_rules(text: str, tmp: Path) -> None:
    f = tmp / "rules.yaml"
    f.write_text(text)
    r = subprocess.run([tool("promtool"), "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def check_prometheus(text: str, tmp: Path) -> None:
    for cred in set(re.findall(r"(?:credentials_file|ca_file|bearer_token_file): (\S+)", text)):
        local = tmp / cred.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text("token\n")
        text = text.replace(cred, str(local))
    f = tmp / "prometheus.yml"
    f.write_text(text)
    r = subprocess.run(
        [tool("promtool"), "check", "config", "--syntax-only", str(f)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


def _receivers(node: object) -> set[str]:
    """Every receiver name a route tree mentions."""
    if isinstance(node, dict):
        found = {node["receiver"]} if isinstance(node.get("receiver"), str) else set()
        return found.union(*(_receivers(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_receivers(v) for v in node))
    return set()


def check_alertmanager(doc: dict, tmp: Path) -> None:
    cfg = dict(doc)
    route = dict(cfg.get("route") or {})
    route.setdefault("receiver", "fragment-default")
    cfg["route"] = route
    named = {r["name"] for r in cfg.get("receivers") or []}
    missing = sorted(_receivers(route) - named)
    cfg["receivers"] = [*(cfg.get("receivers") or []), *({"name": n} for n in missing)]
    for r in cfg["receivers"]:
        for wh in r.get("webhook_configs") or []:
            auth = (wh.get("http_config") or {}).get("authorization") or {}
            if "credentials_file" in auth:
                (tmp / "token").write_text("token\n")
                auth["credentials_file"] = str(tmp / "token")
    f = tmp / "alertmanager.yml"
    f.write_text(yaml.safe_dump(cfg))
    r = subprocess.run([tool("amtool"), "check-config", str(f)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def check_web(text: str, tmp: Path) -> None:
    """memhp's own loader, with the placeholders made real: files named in the example exist (a
    self-signed pair), and `$2y$10$...` is a real bcrypt hash."""
    cert, key = make_self_signed_cert(tmp)
    for name in set(re.findall(r"(?:cert_file|client_ca_file): (\S+)", text)):
        (tmp / name).write_bytes(cert.read_bytes())
    for name in set(re.findall(r"key_file: (\S+)", text)):
        (tmp / name).write_bytes(key.read_bytes())
    real = bcrypt.hashpw(b"secret", bcrypt.gensalt(4)).decode()
    text = text.replace("$2y$10$...", real)
    parse_web_config(text.encode(), str(tmp / "web-config.yml"))


@pytest.mark.parametrize(("where", "text"), examples(), ids=[w for w, _ in examples()])
def test_docs_example_is_accepted_by_the_program_that_reads_it(where, text, tmp_path):
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict), f"{where}: an example must be a YAML mapping"
    k = kind(doc)
    if k == "policy":
        check_policy(text, tmp_path)
    elif k == "rules":
        check_rules(text, tmp_path)
    elif k == "prometheus":
        check_prometheus(text, tmp_path)
    elif k == "alertmanager":
        check_alertmanager(doc, tmp_path)
    elif k == "web":
        check_web(text, tmp_path)
    else:
        assert k == "skip", f"{where}: {k}: classify it in {Path(__file__).name}"


def test_the_docs_have_a_policy_example():
    assert any(kind(yaml.safe_load(t)) == "policy" for _, t in examples())
