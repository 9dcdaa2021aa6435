"""deploy/grafana/: the dashboard provider points at the committed dashboards.

No Grafana runs here. The install commands of docs/deploy.md ("Grafana") run
for real, with Grafana's two folders moved under a temporary directory; the
provider they install is then read as Grafana's file provider reads it
(apiVersion 1, providers of type file, options.path), and the folder it names
must hold exactly the committed dashboards, uids unique, the fleet view's
drill-down target among them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.helpers.deploy import REPO

PROVIDER = REPO / "deploy" / "grafana" / "provisioning" / "dashboards" / "memhp.yaml"
DEPLOY_MD = REPO / "docs" / "deploy.md"
DASHBOARDS = sorted((REPO / "dashboards").glob("*.json"))
GRAFANA_DIRS = ("/var/lib/grafana", "/etc/grafana")


def install_block() -> str:
    """The shell block of docs/deploy.md that installs the provider."""
    blocks = re.findall(r"```sh\n(.*?)```", DEPLOY_MD.read_text(), re.S)
    (block,) = [b for b in blocks if "provisioning/dashboards/memhp.yaml" in b]
    return block


def run_install(root: Path) -> None:
    script = install_block()
    for d in GRAFANA_DIRS:
        script = script.replace(d, f"{root}{d}")
    # Restarting the real Grafana is the one step that cannot run here.
    script = "\n".join(ln for ln in script.splitlines() if not ln.startswith("systemctl "))
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_the_provider_is_a_grafana_file_provider():
    cfg = yaml.safe_load(PROVIDER.read_text())
    assert cfg["apiVersion"] == 1
    (provider,) = cfg["providers"]
    assert provider["type"] == "file" and provider["name"] == "memhp"
    assert set(provider) <= {
        "name",
        "orgId",
        "folder",
        "folderUid",
        "type",
        "disableDeletion",
        "updateIntervalSeconds",
        "allowUiUpdates",
        "options",
    }, "a key Grafana's dashboard provider does not know"
    assert Path(provider["options"]["path"]).is_absolute()
    assert set(provider["options"]) <= {"path", "foldersFromFilesStructure"}


def provided(root: Path, provider_text: str) -> dict[str, str]:
    """name -> text of the dashboards Grafana's file provider would load from ``root``."""
    path = yaml.safe_load(provider_text)["providers"][0]["options"]["path"]
    return {p.name: p.read_text() for p in sorted((root / path.lstrip("/")).glob("*.json"))}


def test_the_documented_install_puts_the_committed_dashboards_where_the_provider_looks(tmp_path):
    run_install(tmp_path)
    installed = list((tmp_path / "etc/grafana/provisioning/dashboards").glob("*.yaml"))
    assert [p.read_text() for p in installed] == [PROVIDER.read_text()]
    loaded = provided(tmp_path, installed[0].read_text())
    assert loaded == {p.name: p.read_text() for p in DASHBOARDS}, "the provider's folder must hold every dashboard"
    uids = [json.loads(t)["uid"] for t in loaded.values()]
    assert len(uids) == len(set(uids))
    fleet = json.loads(loaded["memhp-fleet.json"])
    targets = {
        m.group(1)
        for p in fleet["panels"]
        for link in p.get("fieldConfig", {}).get("defaults", {}).get("links", [])
        if (m := re.match(r"/d/([^/?]+)/", link["url"]))
    }
    assert targets and targets <= set(uids), "a drill-down link to a dashboard the provider does not load"


def test_the_check_is_not_vacuous(tmp_path):
    """A provider pointing anywhere else than where the docs install finds nothing."""
    run_install(tmp_path)
    text = PROVIDER.read_text()
    assert provided(tmp_path, text)
    assert provided(tmp_path, text.replace("dashboards/memhp", "dashboards/elsewhere")) == {}
