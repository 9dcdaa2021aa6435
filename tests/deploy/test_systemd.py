"""deploy/systemd/: `systemd-analyze verify` accepts the units, the hardening
the design asks for is there, and the environment files' arguments parse.

The units point at the installed path /opt/memhp/venv/bin; verify needs the
ExecStart binary to exist, so the test copies the units to a temporary
directory with that path replaced by this checkout's .venv/bin."""

from __future__ import annotations

import subprocess

import pytest

from tests.helpers.deploy import SYSTEMD, env_file_words, k8s_doc, tool
from tests.helpers.tools import VENV_BIN

UNITS = ("memhp-exporter.service", "memhp-controller.service", "memhp-relay.service")
INSTALLED_BIN = "/opt/memhp/venv/bin"


def unit(name: str) -> dict[str, list[str]]:
    """key -> every value, in the [Service] section (systemd keys repeat)."""
    out: dict[str, list[str]] = {}
    section = None
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


@pytest.fixture
def verifiable(tmp_path):
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert INSTALLED_BIN in text
        (tmp_path / name).write_text(text.replace(INSTALLED_BIN, str(VENV_BIN)))
    return tmp_path


def test_systemd_analyze_verify_accepts_the_units(verifiable):
    r = subprocess.run(
        [tool("systemd-analyze"), "verify", *[str(verifiable / u) for u in UNITS]],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    # Unknown keys and bad values are only warnings to verify: none allowed.
    assert r.stderr.strip() == "" and r.stdout.strip() == "", r.stderr + r.stdout


def test_verify_is_not_vacuous(verifiable):
    f = verifiable / UNITS[0]
    f.write_text(f.read_text().replace("NoNewPrivileges=yes", "NoNewPrivilegez=yes"))
    r = subprocess.run([tool("systemd-analyze"), "verify", str(f)], capture_output=True, text=True)
    assert "Unknown key" in r.stderr


@pytest.mark.parametrize("name", UNITS)
def test_common_hardening(name):
    u = unit(name)
    assert u["ProtectSystem"] == ["strict"]
    assert u["ProtectHome"] == ["yes"] and u["NoNewPrivileges"] == ["yes"] and u["PrivateTmp"] == ["yes"]
    assert "AF_NETLINK" in u["RestrictAddressFamilies"][0].split()
    assert u["Restart"] == ["on-failure"]
    assert "CapabilityBoundingSet" in u
    assert u["ExecStart"][0].startswith(INSTALLED_BIN + "/")
    assert u["EnvironmentFile"][0] == f"-/etc/default/{name.removesuffix('.service')}"


def test_controller_writes_only_where_it_must():
    u = unit("memhp-controller.service")
    assert u["CapabilityBoundingSet"] == [""] and u["AmbientCapabilities"] == [""]
    assert u["ReadWritePaths"] == ["/sys/devices/system/memory"]
    assert "/sys" in u["ReadOnlyPaths"][0].split()
    assert u["StateDirectory"] == ["memhp-controller"] and u["RuntimeDirectory"] == ["memhp-controller"]
    # ProtectKernelTunables=yes would make /sys read-only: the controller could not write state.
    assert "ProtectKernelTunables" not in u
    # The policy's journal and pause file are in those directories.
    from memhp.controller.config import load_config

    cfg = load_config(str(SYSTEMD / "controller.yml"))
    assert cfg.controller.journal.startswith("/var/lib/memhp-controller/")
    assert cfg.guards.pause_file.startswith("/run/memhp-controller/")


def test_exporter_reads_only():
    u = unit("memhp-exporter.service")
    assert u["DynamicUser"] == ["yes"]
    assert u["CapabilityBoundingSet"] == ["CAP_SYSLOG"]  # /dev/kmsg under dmesg_restrict
    assert u["ProtectKernelTunables"] == ["yes"]
    assert "ReadWritePaths" not in u
    assert "ProtectKernelLogs" not in u  # it would hide /dev/kmsg
    assert u["DeviceAllow"] == ["/dev/kmsg r"]


@pytest.mark.parametrize(
    "prog,var", [("memhp-exporter", "MEMHP_EXPORTER_ARGS"), ("memhp-controller", "MEMHP_CONTROLLER_ARGS")]
)
def test_environment_file_arguments_parse(prog, var, tmp_path):
    text = (SYSTEMD / f"{prog}.default").read_text()
    words = env_file_words(text, var)
    assert f"${var}" in unit(f"{prog}.service")["ExecStart"][0]
    if prog == "memhp-controller":
        words = [w.replace("/etc/memhp/controller.yml", str(SYSTEMD / "controller.yml")) for w in words]
        r = subprocess.run([str(VENV_BIN / prog), *words, "check-config"], capture_output=True, text=True)
    else:
        from memhp.exporter.cli import config_from_args, get_parser

        config_from_args(get_parser().parse_args(words))
        r = subprocess.run([str(VENV_BIN / prog), *words, "--help"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr, r.stderr  # the shipped policy names only alerts memhp ships
    # The commented alternative (pull mode) parses too.
    for line in text.splitlines():
        if line.startswith(f"#{var}="):
            alt = env_file_words(line[1:], var)
            from memhp.controller.cli import get_parser as controller_parser

            args = controller_parser().parse_args(alt)
            assert args.alertmanager_url and args.alertmanager_node_label == "instance"


def test_systemd_policy_is_the_kubernetes_policy():
    cm = k8s_doc("ConfigMap", "memhp-controller")["data"]["controller.yml"]
    text = (SYSTEMD / "controller.yml").read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#")) + "\n"
    assert body == cm
