"""The Dockerfile: hadolint, its structure, its pins and its build context.

The static side: the linter, the instructions, the constraints file, the
build context. test_image.py runs the image's and the DaemonSet's commands on
the host; test_image_podman.py builds the image with podman and runs it."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from importlib.metadata import requires

from packaging.requirements import Requirement

from tests.helpers.deploy import (
    DOCKERFILE,
    REPO,
    dockerfile_instructions,
    exec_form,
    global_args,
    image_command,
    stages,
    tool,
)

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_hadolint_passes_without_unjustified_ignores():
    r = subprocess.run([tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip() == ""
    # An inline `# hadolint ignore=DLxxxx` must be preceded by a comment that says why.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.search(r"hadolint\s+ignore", line):
            why = lines[i - 1].strip() if i else ""
            assert why.startswith("#") and "hadolint" not in why and len(why) > 20, (
                f"line {i + 1}: hadolint ignore without a justification comment above it"
            )
    assert not (REPO / ".hadolint.yaml").exists() or "ignored" not in (REPO / ".hadolint.yaml").read_text()


def test_hadolint_is_not_vacuous(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y curl\nCMD memhp-exporter\n")
    r = subprocess.run([tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3006" in r.stdout and "DL3008" in r.stdout


def test_multi_stage_slim_base_and_final_stage():
    st = stages(dockerfile_instructions())
    assert len(st) >= 2, "multi-stage build expected"
    # Both stages on one base, named by a global ARG (a mirror, or the tests' stand-in).
    assert global_args().get("PYTHON_IMAGE") == "python:3.11-slim-bookworm", global_args()
    for s in st:
        image = s[0][1].split()[0]
        assert image == "${PYTHON_IMAGE}", image
    final = st[-1]
    kinds = [i for i, _ in final]
    # The exporter (default command) runs as the unprivileged user, not root.
    users = [a for i, a in final if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert "HEALTHCHECK" in kinds
    hc = next(a for i, a in final if i == "HEALTHCHECK")
    assert "CMD" in hc and "--interval=" in hc
    assert exec_form(hc.split("CMD", 1)[1].strip())[0] == "python"
    # No compilers or build tools in the final stage; pip itself is removed.
    run = " ".join(a for i, a in final if i == "RUN")
    for forbidden in ("gcc", "build-essential", "python3-dev", "libc6-dev", "make "):
        assert forbidden not in run
    assert re.search(r"pip uninstall --yes pip setuptools wheel", run)
    # Only the venv is taken from the build stage.
    copies_from = [a for i, a in final if i == "COPY" and a.startswith("--from=")]
    assert copies_from == ["--from=build /opt/memhp/venv /opt/memhp/venv"]


def test_labels_and_version():
    final = stages(dockerfile_instructions())[-1]
    text = " ".join(a for i, a in final if i == "LABEL")
    labels = dict(re.findall(r'([\w.\-]+)="([^"]*)"', text))
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels, key
    args = dict(a.split("=", 1) for i, a in final if i == "ARG" and "=" in a)
    from memhp import __version__  # pyproject.toml's dynamic version

    assert "version" in PYPROJECT["project"]["dynamic"]
    assert args["VERSION"] == __version__
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]  # SPDX string
    # The controller's needs are stated on the image itself.
    assert "/sys/devices/system/memory" in labels["io.memhp.controller.privileges"]


def test_both_programs_from_one_image():
    cmd = image_command()
    assert cmd == ["memhp-exporter"], cmd
    final = stages(dockerfile_instructions())[-1]
    assert not [a for i, a in final if i == "ENTRYPOINT"], (
        "no ENTRYPOINT: the command chooses the program (memhp-exporter, memhp-controller, memhp)"
    )
    scripts = PYPROJECT["project"]["scripts"]
    assert {"memhp-exporter", "memhp-controller", "memhp", "memhp-relay"} <= set(scripts)
    exposed = {a for i, a in final if i == "EXPOSE"}
    assert exposed == {"10301 10302 10303"}


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[Requirement(name).name.lower().replace("_", "-")] = version
    return pins


def _runtime_closure() -> set[str]:
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        for sub in requires(req.name) or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r)
    return seen


def test_constraints_pin_exactly_the_runtime_closure():
    pins = _constraints()
    build = {Requirement(r).name.lower() for r in PYPROJECT["build-system"]["requires"]}
    runtime = _runtime_closure()
    assert set(pins) == runtime | build, set(pins) ^ (runtime | build)
    # Every pin satisfies what pyproject asks for.
    for spec in [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[req.name.lower().replace("_", "-")]), (spec, pins)


def test_constraints_are_what_the_dockerfile_uses():
    build = stages(dockerfile_instructions())[0]
    env = " ".join(a for i, a in build if i == "ENV")
    assert "PIP_CONSTRAINT=/src/constraints.txt" in env
    assert any(i == "COPY" and "constraints.txt" in a.split()[:-1] for i, a in build)


def _dockerignore_excludes(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a
    pattern matching a directory covers everything below it."""
    excluded = False
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(seg, p[3:]) for seg in parts)
        else:
            hit = any(fnmatch.fnmatchcase(pre, p) and pre.count("/") == p.count("/") for pre in prefixes)
        if hit:
            excluded = not neg
    return excluded


def test_dockerignore_admits_every_copy_source_and_nothing_else():
    patterns = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.strip().startswith("#")
    ]
    sources = []
    for ins, args in dockerfile_instructions():
        if ins == "COPY" and not args.startswith("--from="):
            sources += args.split()[:-1]
    assert sources
    for src in sources:
        path = REPO / src
        assert path.exists(), src
        files = [path] if path.is_file() else [p for p in path.rglob("*.py") if "__pycache__" not in p.parts]
        assert files
        for f in files:
            rel = f.relative_to(REPO).as_posix()
            assert not _dockerignore_excludes(rel, patterns), f"{rel} is COPYed but .dockerignore excludes it"
    for rel in (
        ".venv/bin/python",
        "tests/fixtures/imbalanced.tar.gz",
        "exporter/__pycache__/cli.cpython-311.pyc",
        ".git/HEAD",
        "docs/deploy.md",
    ):
        assert _dockerignore_excludes(rel, patterns), f"{rel} would be sent to the build context"
