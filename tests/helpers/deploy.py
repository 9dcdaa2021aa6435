"""Helpers of the deployment tests (tests/deploy): paths, YAML loading, the
Dockerfile's instructions and the DaemonSet's containers."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.helpers.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
EXAMPLES = DEPLOY / "examples"
DOCKERFILE = REPO / "Dockerfile"


def tool(name: str) -> str:
    """A tool the tests need: from the venv first, then PATH; a missing one fails the test."""
    return require_tool(name)


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def k8s_docs() -> list[tuple[Path, dict]]:
    out: list[tuple[Path, dict]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        out.extend((path, d) for d in load_all(path))
    return out


def k8s_doc(kind: str, name: str) -> dict:
    hits = [d for _, d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(hits) == 1, f"expected one {kind}/{name}, found {len(hits)}"
    return hits[0]


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    assert not buf, "Dockerfile ends inside a continued line"
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for ins in instructions:
        if ins[0] == "FROM":
            out.append([])
        if out:
            out[-1].append(ins)
    return out


def global_args(instructions: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """ARG NAME=default lines before the first FROM (the ones a FROM can use)."""
    out: dict[str, str] = {}
    for ins, args in instructions or dockerfile_instructions():
        if ins == "FROM":
            break
        if ins == "ARG":
            name, _, default = args.partition("=")
            out[name] = default
    return out


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) CMD/ENTRYPOINT; shell form is refused (signals would go to sh)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(a, str) for a in value), args
    return value


def image_command(instructions: list[tuple[str, str]] | None = None) -> list[str]:
    """What `docker run IMAGE` executes: ENTRYPOINT + CMD of the final stage."""
    final = stages(instructions or dockerfile_instructions())[-1]
    entry = [exec_form(a) for i, a in final if i == "ENTRYPOINT"]
    cmd = [exec_form(a) for i, a in final if i == "CMD"]
    return (entry[-1] if entry else []) + (cmd[-1] if cmd else [])


def daemonset_containers() -> dict[str, dict]:
    ds = k8s_doc("DaemonSet", "memhp")
    return {c["name"]: c for c in ds["spec"]["template"]["spec"]["containers"]}


def env_file_words(text: str, var: str) -> list[str]:
    """The words of VAR=... in an environment file, as systemd splits an unbraced $VAR."""
    for line in text.splitlines():
        if line.startswith(f"{var}="):
            value = line.split("=", 1)[1]
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            return value.split()
    raise AssertionError(f"{var} is not set")
