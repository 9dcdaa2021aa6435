"""The distribution memhp ships: one import package, nothing else.

The repo's folders exporter/, controller/ and report/ install as
memhp.exporter, memhp.controller and memhp.report (pyproject's package-dir);
a top-level ``exporter`` or ``controller`` in site-packages would collide
with the unrelated PyPI distributions of those names.  So the wheel is
built for real (pip, with the index setup.sh configures), its contents are
checked against the folders, and it is installed into a fresh virtualenv
where every console script must answer ``--help`` from a directory outside
the checkout: nothing can come from the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SCRIPTS: dict[str, str] = PYPROJECT["project"]["scripts"]
# repo folder -> the import package it installs as
FOLDERS = {"memhp": "memhp", "exporter": "memhp.exporter", "controller": "memhp.controller", "report": "memhp.report"}
# what the repo tree holds that is no part of the wheel's sources
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "tests", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"
)


def _run(argv: list[str | Path], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def source_modules() -> set[str]:
    """Every module of the four package folders, as the wheel must name it (memhp/...)."""
    out = set()
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(REPO / folder).as_posix()
            out.add(f"{package.replace('.', '/')}/{rel}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """memhp's wheel, built by pip from a copy of the checkout (the working tree stays clean)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    shutil.copytree(REPO, src, ignore=NOT_SOURCES, symlinks=True)
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", work / "dist", src], cwd=work)
    assert r.returncode == 0, f"pip wheel failed (scripts/setup.sh configures the index):\n{r.stdout}\n{r.stderr}"
    (whl,) = (work / "dist").glob("memhp-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel and its runtime dependencies (no extras), pip as configured here."""
    env_dir = tmp_path_factory.mktemp("venv") / "venv"
    r = _run([sys.executable, "-m", "venv", env_dir], cwd=env_dir.parent)
    assert r.returncode == 0, r.stderr
    r = _run([env_dir / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=env_dir.parent)
    assert r.returncode == 0, f"pip install of the wheel failed:\n{r.stdout}\n{r.stderr}"
    return env_dir


@pytest.fixture
def outside(tmp_path) -> Path:
    """A working directory outside the checkout: `python` puts its cwd first on sys.path."""
    assert not tmp_path.is_relative_to(REPO)
    return tmp_path


def test_wheel_holds_only_the_memhp_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert len(dist_info) == 1 and top - dist_info == {"memhp"}, sorted(top)


def test_wheel_holds_every_module_of_the_package_folders(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = source_modules()
    assert "memhp/exporter/kernel/__init__.py" in modules  # the walk found the subpackages
    missing = sorted(modules - names)
    assert not missing, f"not in the wheel (a new subpackage missing from pyproject's packages list?): {missing}"
    extra = sorted(n for n in names if n.endswith(".py") and n not in modules)
    assert not extra, f"in the wheel but not in the repo's package folders: {extra}"


def test_wheel_declares_the_console_scripts_of_pyproject(wheel):
    zf = zipfile.ZipFile(wheel)
    (entry_points,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
    text = zf.read(entry_points).decode()
    for name, target in SCRIPTS.items():
        assert f"{name} = {target}" in text, text


def test_wheel_carries_the_license_and_the_project_urls(wheel):
    zf = zipfile.ZipFile(wheel)
    (metadata,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
    meta = zf.read(metadata).decode()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta, meta[:2000]
    (license_file,) = [n for n in zf.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert zf.read(license_file) == (REPO / "LICENSE").read_bytes()
    for label, url in PYPROJECT["project"]["urls"].items():
        assert f"Project-URL: {label}, {url}" in meta, label


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_console_script_answers_help_from_the_installed_wheel(script, venv, outside):
    r = _run([venv / "bin" / script, "--help"], cwd=outside, timeout=120)
    assert r.returncode == 0, f"{script} --help exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    assert "usage:" in r.stdout.lower(), r.stdout


def _optional_dependencies() -> set[str]:
    """Import names of the extras a plain install leaves out (the wheel is installed without them)."""
    out = set()
    for extra, reqs in PYPROJECT["project"]["optional-dependencies"].items():
        if extra == "test":
            continue
        for req in reqs:
            out.add(req.split(">", 1)[0].split("=", 1)[0].split("[", 1)[0].strip().lower().replace("-", "_"))
    return out


IMPORT_EVERY_MODULE = """
import importlib, json, pkgutil, sys
import memhp
failed = {}
for m in pkgutil.walk_packages(memhp.__path__, "memhp."):
    try:
        importlib.import_module(m.name)
    except ImportError as e:
        failed[m.name] = (e.name or "").split(".")[0]
files = sorted({mod.__file__ for name, mod in sys.modules.items() if name.startswith("memhp") and mod.__file__})
print(json.dumps({"failed": failed, "files": files}))
"""


def test_every_module_imports_from_the_venv_and_nothing_from_the_checkout(venv, outside):
    import json

    r = _run([venv / "bin" / "python", "-c", IMPORT_EVERY_MODULE], cwd=outside)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    optional = _optional_dependencies()
    assert not {m: dep for m, dep in out["failed"].items() if dep not in optional}, out["failed"]
    assert len(out["files"]) >= len(source_modules()) - len(out["failed"])
    assert all(Path(f).is_relative_to(venv) for f in out["files"]), [f for f in out["files"] if REPO.as_posix() in f]


@pytest.mark.parametrize("name", sorted(n for n in FOLDERS if n != "memhp"))
def test_the_folders_are_not_importable_under_their_own_names(name, venv, outside):
    """Installed (the wheel) or editable (this checkout's .venv): `import exporter` fails."""
    for python in (venv / "bin" / "python", Path(sys.executable)):
        r = _run([python, "-c", f"import {name}"], cwd=outside)
        assert r.returncode != 0 and f"No module named '{name}'" in r.stderr, (python, r.stdout, r.stderr)
