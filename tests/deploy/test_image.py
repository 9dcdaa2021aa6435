"""The commands the image and the DaemonSet name, run on the host as they would
run in the container: the programs from .venv/bin, the DaemonSet's volume
mounts emulated by mapping each mountPath onto a fixture tree (the hostPath
/ is the unpacked fixture), the downward API's NODE_NAME set, and a stub
Alertmanager on loopback standing in for the cluster's. Also the HEALTHCHECK
script against real running programs, and the build stage's commands.

The image itself is built and run with podman in test_image_podman.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers.deploy import (
    REPO,
    daemonset_containers,
    dockerfile_instructions,
    exec_form,
    image_command,
    k8s_doc,
    stages,
)
from tests.helpers.tools import VENV_BIN
from tests.helpers.trees import fixture_archives, unpack
from tests.helpers.wait import free_port

FIXTURE = next(a for a in fixture_archives() if a.name.startswith("two-node"))
TOKEN = "test-token-0123456789abcdef"


def venv_argv(argv: list[str]) -> list[str]:
    """A command as the image's PATH (/opt/memhp/venv/bin first) resolves it, from .venv/bin."""
    prog = VENV_BIN / argv[0]
    assert prog.exists(), f"{argv[0]} (named by the Dockerfile/DaemonSet) is not a console script of the project"
    return [str(prog), *argv[1:]]


@pytest.fixture
def tree(tmp_path) -> Path:
    return unpack(FIXTURE, tmp_path / "host")


# ----------------------------------------------------------------- the DaemonSet's mounts, emulated


def mount_map(container: dict, host_root: Path, scratch: Path) -> dict[str, Path]:
    """mountPath -> local directory, for every volume of the container."""
    pod = k8s_doc("DaemonSet", "memhp")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    out: dict[str, Path] = {}
    for m in container["volumeMounts"]:
        v = volumes[m["name"]]
        if "hostPath" in v:
            local = host_root / v["hostPath"]["path"].lstrip("/")
            if v["hostPath"].get("type") == "DirectoryOrCreate":
                local.mkdir(parents=True, exist_ok=True)
            assert local.is_dir(), f"hostPath {v['hostPath']['path']} missing from the fixture tree"
        elif "configMap" in v:
            local = scratch / m["name"]
            local.mkdir()
            for key, value in k8s_doc("ConfigMap", v["configMap"]["name"])["data"].items():
                (local / key).write_text(value)
        elif "secret" in v:
            local = scratch / m["name"]
            local.mkdir()
            for key, value in k8s_doc("Secret", v["secret"]["secretName"])["stringData"].items():
                # The shipped token is empty (fails closed); an overlay sets it: so do we.
                (local / key).write_text((value or TOKEN) + "\n")
                (local / key).chmod(v["secret"].get("defaultMode", 0o644))
        else:
            raise AssertionError(f"volume type of {m['name']} not emulated")
        out[m["mountPath"]] = local
    return out


def remap(text: str, mounts: dict[str, Path]) -> str:
    for mount_path in sorted(mounts, key=len, reverse=True):
        text = re.sub(rf"(?<![\w/]){re.escape(mount_path)}(?=/|\b|$)", str(mounts[mount_path]), text)
    return text


def container_argv(name: str, host_root: Path, scratch: Path) -> tuple[list[str], dict[str, str], dict]:
    c = daemonset_containers()[name]
    mounts = mount_map(c, host_root, scratch)
    # Files from ConfigMaps name paths inside the container too (journal, pause file).
    for local in mounts.values():
        for f in local.glob("*.yml"):
            f.write_text(remap(f.read_text(), mounts))
    argv = venv_argv([*c["command"], *c.get("args", [])])
    argv = [remap(a, mounts) for a in argv]
    env = dict(os.environ)
    for e in c.get("env", []):
        if "valueFrom" in e:
            assert e["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
            env[e["name"]] = "node-a"
        else:
            env[e["name"]] = e["value"]
    return argv, env, mounts


class StubAlertmanager:
    """GET /api/v2/alerts answering [] and recording the queries."""

    def __init__(self) -> None:
        self.queries: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                parts = urlsplit(self.path)
                outer.queries.append(
                    {"path": parts.path, "query": parse_qs(parts.query), "auth": self.headers.get("Authorization")}
                )
                body = b"[]" if parts.path == "/api/v2/alerts" else b"{}"
                self.send_response(200 if parts.path == "/api/v2/alerts" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alertmanager():
    am = StubAlertmanager()
    yield am
    am.close()


def point_at(argv: list[str], am: StubAlertmanager, listen: str | None = None) -> list[str]:
    out = []
    for a in argv:
        if a.startswith("--alertmanager.url="):
            a = f"--alertmanager.url={am.url}"
        if listen and a.startswith("--web.listen-address="):
            a = f"--web.listen-address={listen}"
        out.append(a)
    return out


@contextmanager
def running(argv: list[str], env: dict | None = None):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_http(url: str, proc: subprocess.Popen, headers: dict | None = None, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args[0]} exited {proc.returncode}: {proc.stderr.read()}")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:
                return r.read()
        except OSError as e:
            last = e
            time.sleep(0.05)  # polling a starting server, not a fixed wait
    raise AssertionError(f"{url} not up after {timeout}s: {last}")


# ----------------------------------------------------------------- the image's own command


def test_image_default_command_help_and_once_on_this_machine():
    cmd = venv_argv(image_command())
    r = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--web.listen-address" in r.stdout
    # `docker run IMAGE --once` is not how it works (no ENTRYPOINT); `docker run IMAGE memhp-exporter --once`
    # is, and in a container /sys and /proc are the host's: here, this machine's, read-only.
    r = subprocess.run([*cmd, "--once"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^memhp_block_size_bytes \d", r.stdout, re.M)
    assert re.search(r'^memhp_collector_success\{collector="blocks"\} 1\.0$', r.stdout, re.M)


def test_every_program_the_image_offers_has_help():
    for prog in ("memhp-exporter", "memhp-controller", "memhp", "memhp-relay"):
        r = subprocess.run(venv_argv([prog, "--help"]), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (prog, r.stderr)


# ----------------------------------------------------------------- the DaemonSet's containers


def test_exporter_container_once_reads_the_mounted_host(tree, tmp_path):
    argv, env, mounts = container_argv("exporter", tree, tmp_path)
    assert mounts["/host/sys"] == tree / "sys"
    r = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0
    r = subprocess.run([*argv, "--once"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    # Exactly what the exporter reads from that tree directly: the mounts are where the flags say.
    direct = subprocess.run(
        venv_argv(["memhp-exporter", "--once", f"--path.sysfs={tree / 'sys'}", f"--path.procfs={tree / 'proc'}"]),
        capture_output=True,
        text=True,
    )
    strip = lambda s: "\n".join(ln for ln in s.splitlines() if "duration_seconds" not in ln)  # noqa: E731
    assert strip(r.stdout) == strip(direct.stdout)
    lsmem = json.loads((tree / "lsmem.json").read_text())["memory"]
    offline = sum(1 for m in lsmem if m["state"] == "offline")
    assert offline > 0
    assert re.search(r'^memhp_blocks\{node="\d+",state="offline",zone="[^"]*"\} [1-9]', r.stdout, re.M)


def test_exporter_container_serves_and_passes_its_probes(tree, tmp_path):
    argv, env, _ = container_argv("exporter", tree, tmp_path)
    port = free_port()
    argv = [f"--web.listen-address=127.0.0.1:{port}" if a.startswith("--web.listen-address=") else a for a in argv]
    c = daemonset_containers()["exporter"]
    with running(argv, env) as proc:
        for probe in (c["livenessProbe"], c["readinessProbe"]):
            assert probe["httpGet"]["port"] == "metrics"
            wait_http(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", proc)
        body = wait_http(f"http://127.0.0.1:{port}/metrics", proc).decode()
        assert "memhp_block_size_bytes" in body


def test_controller_container_once_polls_this_nodes_alerts(tree, tmp_path, alertmanager):
    argv, env, mounts = container_argv("controller", tree, tmp_path)
    argv = point_at(argv, alertmanager)
    r = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0
    r = subprocess.run([*argv, "check-config"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    effective = json.loads(r.stdout)
    assert effective["controller"]["journal"].startswith(str(mounts["/var/lib/memhp-controller"]))
    state_before = {p: p.read_text() for p in (tree / "sys/devices/system/memory").glob("memory*/state")}
    r = subprocess.run([*argv, "--once"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    q = [x for x in alertmanager.queries if x["path"] == "/api/v2/alerts"]
    assert len(q) == 1
    assert 'instance="node-a"' in q[0]["query"]["filter"]  # NODE_NAME from the downward API
    assert q[0]["query"]["silenced"] == ["false"] and q[0]["query"]["inhibited"] == ["false"]
    assert (mounts["/var/lib/memhp-controller"] / "journal.jsonl").exists()
    # No alert, dry-run policy: not one state file changed.
    assert {p: p.read_text() for p in state_before} == state_before


def test_controller_container_runs_and_passes_its_probes(tree, tmp_path, alertmanager):
    argv, env, _ = container_argv("controller", tree, tmp_path)
    port = free_port()
    argv = point_at(argv, alertmanager, listen=f"127.0.0.1:{port}")
    c = daemonset_containers()["controller"]
    with running(argv, env) as proc:
        for probe in (c["livenessProbe"], c["readinessProbe"]):
            assert probe["httpGet"]["port"] == "controller"
            wait_http(f"http://127.0.0.1:{port}{probe['httpGet']['path']}", proc)
        # What the ServiceMonitor scrapes, with the Secret's token; and nothing without it.
        body = wait_http(f"http://127.0.0.1:{port}/metrics", proc, {"Authorization": f"Bearer {TOKEN}"})
        assert b"memhp_controller" in body
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert e.value.code == 401


def test_controller_with_the_shipped_empty_token_fails_closed(tree, tmp_path, alertmanager):
    argv, env, mounts = container_argv("controller", tree, tmp_path)
    (mounts["/etc/memhp/secrets"] / "token").chmod(0o600)
    (mounts["/etc/memhp/secrets"] / "token").write_text("")
    argv = point_at(argv, alertmanager, listen=f"127.0.0.1:{free_port()}")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0
    assert "token" in r.stderr.lower() or "secret" in r.stderr.lower(), r.stderr


# ----------------------------------------------------------------- HEALTHCHECK


def healthcheck_argv(cmdline_file: Path) -> list[str]:
    final = stages(dockerfile_instructions())[-1]
    hc = next(a for i, a in final if i == "HEALTHCHECK")
    argv = exec_form(hc.split("CMD", 1)[1].strip())
    copies = {a.split()[-1]: a.split()[0] for i, a in final if i == "COPY" and not a.startswith("--from=")}
    argv = [str(REPO / copies[a]) if a in copies else a for a in argv]
    assert argv[0] == "python"
    return [sys.executable, *argv[1:], "--cmdline", str(cmdline_file)]


def write_cmdline(path: Path, argv: list[str]) -> Path:
    path.write_bytes(b"\0".join(a.encode() for a in [sys.executable, *argv]) + b"\0")
    return path


def test_healthcheck_follows_the_exporter(tree, tmp_path):
    port = free_port()
    argv = venv_argv(
        [
            "memhp-exporter",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--path.sysfs={tree / 'sys'}",
            f"--path.procfs={tree / 'proc'}",
            "--no-collector.offline_failures",
        ]
    )
    cmdline = write_cmdline(tmp_path / "cmdline", argv)
    with running(argv) as proc:
        wait_http(f"http://127.0.0.1:{port}/", proc)
        assert subprocess.run(healthcheck_argv(cmdline), capture_output=True).returncode == 0
    r = subprocess.run(healthcheck_argv(cmdline), capture_output=True, text=True)
    assert r.returncode == 1 and "unhealthy" in r.stderr


def test_healthcheck_follows_the_controller(tree, tmp_path, alertmanager):
    argv, env, _ = container_argv("controller", tree, tmp_path)
    port = free_port()
    argv = point_at(argv, alertmanager, listen=f"127.0.0.1:{port}")
    cmdline = write_cmdline(tmp_path / "cmdline", argv)
    with running(argv, env) as proc:
        wait_http(f"http://127.0.0.1:{port}/-/healthy", proc)
        assert subprocess.run(healthcheck_argv(cmdline), capture_output=True).returncode == 0
    assert subprocess.run(healthcheck_argv(cmdline), capture_output=True).returncode == 1


def test_healthcheck_one_shot_commands_are_healthy(tmp_path):
    for argv in (["memhp-exporter", "--once"], ["memhp-controller", "act", "online", "--blocks", "3"]):
        cmdline = write_cmdline(tmp_path / "cmdline", venv_argv(argv))
        assert subprocess.run(healthcheck_argv(cmdline), capture_output=True).returncode == 0


# ----------------------------------------------------------------- the build stage, on the host


def test_build_stage_commands_build_a_working_venv(tmp_path):
    """The build stage's RUN, with its ENV, in a copy of its COPYed context; /src, /wheels and
    /opt/memhp/venv mapped to temporary directories. Downloads the pinned wheels from PyPI."""
    build = stages(dockerfile_instructions())[0]
    src, wheels, venv = tmp_path / "src", tmp_path / "wheels", tmp_path / "opt/memhp/venv"
    src.mkdir()
    for ins, args in build:
        if ins == "COPY":
            *sources, _dest = args.split()
            for s in sources:
                p = REPO / s
                if p.is_dir():
                    shutil.copytree(p, src / s.rstrip("/"), ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(p, src / p.name)
    env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ['PATH']}")
    for ins, args in build:
        if ins == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                env[k] = v.replace("/src", str(src))
    runs = [a for i, a in build if i == "RUN"]
    assert len(runs) == 1
    script = runs[0].replace("/opt/memhp/venv", str(venv)).replace("/wheels", str(wheels)).replace("/src", str(src))
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=600, cwd=src
    )
    assert r.returncode == 0, r.stdout + r.stderr
    freeze = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(sorted("
            "f'{d.metadata[\"Name\"].lower()}=={d.version}' for d in m.distributions())))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = [ln.split("#")[0].strip().lower() for ln in (REPO / "constraints.txt").read_text().splitlines()]
    runtime = {p for p in pins if p and not p.startswith(("setuptools", "wheel"))}
    installed = {f.replace("_", "-") for f in freeze if not f.startswith("memhp==")}
    assert installed == {p.replace("_", "-") for p in runtime}, installed ^ runtime
    assert not (venv / "bin/pip").exists()
    for prog in ("memhp-exporter", "memhp-controller", "memhp"):
        r = subprocess.run([str(venv / "bin" / prog), "--help"], capture_output=True, text=True)
        assert r.returncode == 0, (prog, r.stderr)
