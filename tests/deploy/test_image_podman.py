"""The real image: built from the repo's Dockerfile with Debian's podman and run.

No registry can be reached here, so the Dockerfile's ``PYTHON_IMAGE`` names a
stand-in for ``python:3.11-slim-bookworm`` made with debootstrap (cached under
/var/tmp, see tests/helpers/podman.py). Everything else is the Dockerfile as a
user builds it: ``podman build --format docker`` (the OCI format would drop
HEALTHCHECK), its own apt-get, useradd and pip against Debian and PyPI.

The build and the stand-in are cached between runs (podman's layer cache keyed
on the build context; the stand-in's rootfs keyed on its recipe), so a run
without changes costs seconds; a cold one about two minutes.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers.deploy import REPO, image_command
from tests.helpers.podman import build_volumes, podman, podman_env, standin_base
from tests.helpers.tools import VENV_BIN
from tests.helpers.trees import fixture_archives, unpack

pytestmark = pytest.mark.image

# Budget for the image as built here (uncompressed, as `podman image inspect`
# reports it): the stand-in base is ~182 MB (python:3.11-slim-bookworm itself is
# ~130 MB), memhp's own layers (libudev1, the venv, the user) ~6 MB. The
# budget leaves room for a dependency or two; docs/deploy.md says the same.
IMAGE_BUDGET_BYTES = 250 * 1000**2
OWN_LAYERS_BUDGET_BYTES = 30 * 1000**2

REPORT: list[str] = []  # printed at the end of the run by tests/deploy/conftest.py


@dataclass
class Image:
    ref: str
    base: str
    env: dict[str, str]
    base_seconds: float
    build_seconds: float

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return podman(
            "run",
            "--rm",
            "--network=none",
            "--health-interval=disable",
            *args,
            env=self.env,
            timeout=timeout,
            check=check,
        )


def _require_podman() -> None:
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[Image]:
    _require_podman()
    env = podman_env()
    # Untagged images of earlier builds go after a day. They include the build
    # stage's (the layer cache for pip), so a day-old cache is rebuilt once.
    podman("image", "prune", "--force", "--filter", "until=24h", env=env, check=False)
    started = time.monotonic()
    base = standin_base(env)
    base_seconds = time.monotonic() - started
    scratch = tmp_path_factory.mktemp("podman-build")
    # One tag per checkout: parallel worktrees do not retag each other's image.
    ref = f"localhost/memhp:test-{hashlib.sha256(str(REPO).encode()).hexdigest()[:8]}"
    started = time.monotonic()
    podman(
        "build",
        "--format=docker",
        "--pull=never",
        "--network=host",  # apt-get and pip in the RUN steps
        f"--build-arg=PYTHON_IMAGE={base}",
        *build_volumes(scratch),
        "--tag",
        ref,
        "--file",
        str(REPO / "Dockerfile"),
        str(REPO),
        env=env,
        timeout=900,
    )
    yield Image(ref, base, env, base_seconds, time.monotonic() - started)


def inspect(img: Image, ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref, env=img.env).stdout)[0]


def test_image_builds_with_healthcheck_labels_and_user(image):
    info = inspect(image, image.ref)
    config = info["Config"]
    assert config["User"] == "10301:10301"
    assert config["Cmd"] == image_command()
    # --format docker keeps HEALTHCHECK (the OCI format drops it silently).
    assert "docker" in info["ManifestType"], info["ManifestType"]
    assert info["Healthcheck"]["Test"] == ["CMD", "python", "/opt/memhp/healthcheck.py"]
    from memhp import __version__

    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    assert "10301/tcp" in config["ExposedPorts"] and "10302/tcp" in config["ExposedPorts"]


def test_image_size_within_budget(image):
    size = inspect(image, image.ref)["Size"]
    base = inspect(image, image.base)["Size"]
    line = (
        f"memhp image {image.ref}: {size / 1e6:.1f} MB (stand-in base {base / 1e6:.1f} MB, memhp's layers "
        f"{(size - base) / 1e6:.1f} MB; budgets {IMAGE_BUDGET_BYTES / 1e6:.0f} MB and "
        f"{OWN_LAYERS_BUDGET_BYTES / 1e6:.0f} MB); stand-in base ready in {image.base_seconds:.1f} s, "
        f"podman build took {image.build_seconds:.1f} s"
    )
    print(line)
    REPORT.append(line)
    assert size <= IMAGE_BUDGET_BYTES, line
    assert size - base <= OWN_LAYERS_BUDGET_BYTES, line


PROBE = """
import importlib.util, json, os, pwd, shutil
print(json.dumps({
    "ids": [os.getuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name],
    "modules": [m for m in ("pip", "setuptools", "wheel") if importlib.util.find_spec(m)],
    "programs": [p for p in ("pip", "pip3", "pip3.11") if shutil.which(p)],
}))
"""


def test_runs_as_memhp_without_pip(image):
    got = json.loads(image.run(image.ref, "python", "-c", PROBE).stdout)
    assert got["ids"] == [10301, 10301, "memhp"], got
    assert got["modules"] == [] and got["programs"] == [], got
    # The probe itself sees pip where there is one: the stand-in base still has it.
    base = json.loads(image.run("--user=0", image.base, "python", "-c", PROBE).stdout)
    assert "pip" in base["modules"] and "pip" in base["programs"], base


LICENSE_PROBE = """
import importlib.metadata as m
d = m.distribution("memhp")
print(d.metadata["License-Expression"])
print(d.read_text("licenses/LICENSE"))
"""


def test_the_image_carries_the_license(image):
    """pyproject's license-files reach the image: the wheel built in it holds LICENSE."""
    out = image.run(image.ref, "python", "-c", LICENSE_PROBE).stdout
    expression, text = out.split("\n", 1)
    assert expression == "Apache-2.0"
    assert text.rstrip("\n") == (REPO / "LICENSE").read_text().rstrip("\n")


def _collectors(text: str) -> dict[str, str]:
    return dict(re.findall(r'^memhp_collector_success\{collector="([^"]+)"\} (\S+)$', text, re.M))


def test_exporter_once_reads_the_hosts_sys_and_proc(image):
    r = image.run(
        "--volume=/sys:/host/sys:ro",
        "--volume=/proc:/host/proc:ro",
        image.ref,
        "memhp-exporter",
        "--once",
        "--path.sysfs=/host/sys",
        "--path.procfs=/host/proc",
    )
    got = _collectors(r.stdout)
    # The same collectors the programs report when run on this host directly.
    host = subprocess.run([str(VENV_BIN / "memhp-exporter"), "--once"], capture_output=True, text=True, timeout=120)
    assert host.returncode == 0, host.stderr
    assert set(got) == set(_collectors(host.stdout)) and {"blocks", "zones", "meminfo", "config"} <= set(got), got
    assert all(v == "1.0" for v in got.values()), (got, r.stderr)
    assert re.search(r"^memhp_block_size_bytes \d", r.stdout, re.M)


def test_memhp_blocks_lists_the_hosts_blocks(image):
    r = image.run("--volume=/sys:/host/sys:ro", image.ref, "memhp", "blocks", "--path.sysfs=/host/sys", "--json")
    host = subprocess.run([str(VENV_BIN / "memhp"), "blocks", "--json"], capture_output=True, text=True, timeout=60)
    assert host.returncode == 0, host.stderr
    assert json.loads(r.stdout) == json.loads(host.stdout)
    assert json.loads(r.stdout)["memory"]


def _wait_healthy(image: Image, name: str, timeout: float = 60) -> subprocess.CompletedProcess:
    deadline = time.monotonic() + timeout
    while True:
        r = podman("healthcheck", "run", name, env=image.env, check=False)
        if r.returncode == 0 or time.monotonic() > deadline:
            return r
        state = podman("inspect", "--format", "{{.State.Status}}", name, env=image.env, check=False).stdout.strip()
        if state != "running":
            logs = podman("logs", name, env=image.env, check=False)
            raise AssertionError(f"{name} is {state}:\n{logs.stdout}\n{logs.stderr}")
        time.sleep(0.5)  # polling a starting server, not a fixed wait


def _container(image: Image, name: str, *args: str) -> None:
    podman("rm", "--force", "--ignore", name, env=image.env, check=False)
    podman("run", "--detach", "--name", name, "--network=none", "--health-interval=disable", *args, env=image.env)


def _remove(image: Image, name: str) -> None:
    podman("rm", "--force", "--time=5", name, env=image.env, check=False)


def test_healthcheck_exporter(image):
    name = f"memhp-exporter-{image.ref.rsplit('-', 1)[1]}"
    try:
        _container(
            image,
            name,
            "--volume=/sys:/host/sys:ro",
            "--volume=/proc:/host/proc:ro",
            image.ref,
            "memhp-exporter",
            "--path.sysfs=/host/sys",
            "--path.procfs=/host/proc",
            "--no-collector.offline_failures",
        )
        r = _wait_healthy(image, name)
        assert r.returncode == 0 and "unhealthy" not in r.stdout, r.stdout + r.stderr
        # And it fails when the program stops answering: a healthcheck that is not vacuous.
        # (From the host: inside its PID namespace PID 1 ignores SIGSTOP.)
        podman("kill", "--signal=SIGSTOP", name, env=image.env)
        r = podman("healthcheck", "run", name, env=image.env, check=False, timeout=60)
        assert r.returncode != 0, r.stdout + r.stderr
    finally:
        _remove(image, name)


def test_healthcheck_controller_as_root_without_capabilities_read_only(image, tmp_path):
    """As docs/deploy.md runs it: uid 0, every capability dropped, read-only root,
    the shipped policy (dry-run), a writable sysfs bind (a fixture tree here:
    this machine's /sys is never written), the journal on a volume."""
    tree = unpack(next(a for a in fixture_archives() if a.name.startswith("two-node")), tmp_path / "host")
    config = REPO / "deploy/systemd/controller.yml"
    assert "dry_run: true" in config.read_text()
    token = tmp_path / "token"
    token.write_text("container-test-token-0123456789\n")
    token.chmod(0o600)
    journal = tmp_path / "journal"
    journal.mkdir()
    name = f"memhp-controller-{image.ref.rsplit('-', 1)[1]}"
    try:
        _container(
            image,
            name,
            "--user=0",
            "--cap-drop=ALL",
            "--read-only",
            f"--volume={tree / 'sys'}:/host/sys",
            f"--volume={tree / 'proc'}:/host/proc:ro",
            f"--volume={config}:/etc/memhp/controller.yml:ro",
            f"--volume={token}:/etc/memhp/webhook-token:ro",
            f"--volume={journal}:/var/lib/memhp-controller",
            image.ref,
            "memhp-controller",
            "--config.file=/etc/memhp/controller.yml",
            "--path.sysfs=/host/sys",
            "--path.procfs=/host/proc",
            "--web.listen-address=127.0.0.1:10302",
            "--web.auth.bearer-token-file=/etc/memhp/webhook-token",
        )
        r = _wait_healthy(image, name)
        assert r.returncode == 0, r.stdout + r.stderr
        caps = podman("exec", name, "grep", "^CapEff", "/proc/1/status", env=image.env).stdout.split()[1]
        assert int(caps, 16) == 0, caps
        uid = podman("exec", name, "python", "-c", "import os; print(os.getuid())", env=image.env).stdout.strip()
        assert uid == "0"
        r = podman("exec", name, "touch", "/opt/memhp/x", env=image.env, check=False)
        assert r.returncode != 0 and "Read-only" in r.stderr, r.stderr
    finally:
        _remove(image, name)
