"""One name per module: the checkout never edits the import path, no code
imports the package folders under their bare folder names, and no test
imports a conftest file.

Under pytest (rootdir on the path) or `python` started at the repo's top,
`import exporter` would load a second copy of memhp.exporter: two module
objects, two registries, two sets of constants.  The installed side of the
rule (`import exporter` fails in a venv with the wheel) is in test_wheel.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE_FOLDERS = ("exporter", "controller", "report")

# Edits of the module search path: the list's methods, item/slice assignment,
# rebinding, site directories, and the environment variable for child processes.
PATH_EDIT = re.compile(
    r"\bsys\s*\.\s*path\s*(\.\s*(insert|append|extend|remove|pop|clear)\b|\[[^\]]*\]\s*=|\+=|=(?!=))"
    r"|\bsite\s*\.\s*addsitedir\b"
    r"|[\"']PYTHONPATH[\"']\s*(:|\]\s*=(?!=))|(setdefault|putenv)\(\s*[\"']PYTHONPATH|\bPYTHONPATH="
)
BARE_IMPORT = re.compile(
    rf"^\s*(from|import)\s+({'|'.join(PACKAGE_FOLDERS)})(\.|\s|$)"
    rf"|[\"']-m[\"']\s*,\s*[\"']({'|'.join(PACKAGE_FOLDERS)})\."
    rf"|(?<![\w-])-m\s+({'|'.join(PACKAGE_FOLDERS)})\.",
    re.M,
)
# pytest imports each conftest itself; importing one by name again makes a second
# module (and, for fixtures, a second definition).  Helpers go to tests/helpers,
# shared fixtures to a plugin module in tests/conftest.py's pytest_plugins.
CONFTEST_IMPORT = re.compile(r"^\s*(from\s+(\.+|[\w.]+\.)conftest\s+import|import\s+[\w.]*\bconftest\b)")


def python_sources() -> list[Path]:
    """Tracked .py files and tracked scripts with a Python shebang (scripts/*)."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
    ).stdout.split(b"\0")
    out = []
    for name in filter(None, (f.decode() for f in files)):
        path = REPO / name
        if not path.is_file() or name.startswith("tests/fixtures/"):
            continue
        if path.suffix == ".py":
            out.append(path)
        elif not path.suffix:
            with open(path, "rb") as f:
                if re.match(rb"#!.*python", f.readline()):
                    out.append(path)
    return out


def hits(pattern: re.Pattern[str], files: list[Path]) -> list[str]:
    out = []
    for path in files:
        if path == Path(__file__).resolve():
            continue  # the patterns themselves
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                out.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    return out


def test_the_checks_see_the_sources():
    names = {p.relative_to(REPO).as_posix() for p in python_sources()}
    assert {"exporter/cli.py", "controller/cli.py", "tests/conftest.py", "scripts/typecheck"} <= names


def test_patterns_catch_what_they_are_for():
    for bad in (
        "sys.path.insert(0, str(REPO))",
        "sys.path.append(x)",
        "sys.path[:0] = [x]",
        "sys.path = [x]",
        "sys.path += [x]",
        'env = {"PYTHONPATH": str(REPO)}',
        'os.environ["PYTHONPATH"] = str(REPO)',
        "PYTHONPATH=. python x.py",
        "site.addsitedir(d)",
    ):
        assert PATH_EDIT.search(bad), bad
    for fine in ("print(sys.path)", "if p in sys.path:", "assert sys.path == before", 'del env["PYTHONPATH"]'):
        assert not PATH_EDIT.search(fine), fine
    for bad in ("from exporter.cli import main", "import controller", '["-m", "report.cli"]', "python -m exporter.cli"):
        assert BARE_IMPORT.search(bad), bad
    for bad in ("from .conftest import tool", "from tests.vm.conftest import vm_bed", "import tests.e2e.conftest"):
        assert CONFTEST_IMPORT.search(bad), bad
    assert not CONFTEST_IMPORT.search("from tests.helpers.controller import policy_text")
    for fine in ("from memhp.exporter import cli", "from .report import x", "import reportlab", "-m memhp.report"):
        assert not BARE_IMPORT.search(fine), fine


def test_nothing_edits_the_import_path():
    found = hits(PATH_EDIT, python_sources())
    assert not found, (
        "the import path is edited (install with `pip install -e .`, run with `python -m`):\n" + "\n".join(found)
    )


def test_nothing_imports_a_package_folder_by_its_bare_name():
    found = hits(BARE_IMPORT, python_sources())
    assert not found, f"use memhp.{{{','.join(PACKAGE_FOLDERS)}}}:\n" + "\n".join(found)


def test_nothing_imports_a_conftest():
    found = hits(CONFTEST_IMPORT, python_sources())
    assert not found, "helpers belong in tests/helpers, fixtures in a pytest_plugins module:\n" + "\n".join(found)


def test_every_test_folder_is_a_package():
    """Without ``__init__.py`` pytest puts the folder itself on the import path and names its
    modules by file name alone: a second name for each, and clashes between folders."""
    tests = REPO / "tests"
    folders = {p.parent for p in python_sources() if p.is_relative_to(tests) and p.suffix == ".py"}
    missing = sorted(str(f.relative_to(REPO)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"add an empty __init__.py to: {missing}"


def _imports(folder: str) -> dict[str, set[str]]:
    """Absolute memhp.* modules imported by each .py file of a top-level folder."""
    import ast

    out: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[str(path.relative_to(REPO))] = {n for n in names if n == "memhp" or n.startswith("memhp.")}
    return out


def _backtest_bridge(f: str, m: str) -> bool:
    """The one crossing: the report shows the controller's backtest (issue 22) as a section of
    `memhp report --policy`, so report/backtest.py calls it.  The Prometheus client both use is
    memhp.promapi, which belongs to no side."""
    return f == "report/backtest.py" and m.startswith(("memhp.controller.backtest", "memhp.controller.config"))


def test_imports_go_one_way():
    """controller -> exporter's read model (memhp.exporter.kernel) only; report -> memhp only;
    the exporter imports nothing from the other sides (README, "Layout")."""
    bad = []
    for f, mods in _imports("controller").items():
        bad += [(f, m) for m in mods if m.startswith("memhp.exporter") and not m.startswith("memhp.exporter.kernel")]
        bad += [(f, m) for m in mods if m.startswith("memhp.report") and not _backtest_bridge(f, m)]
    for f, mods in _imports("report").items():
        bad += [
            (f, m) for m in mods if m.startswith(("memhp.exporter", "memhp.controller")) and not _backtest_bridge(f, m)
        ]
    for f, mods in _imports("exporter").items():
        bad += [(f, m) for m in mods if m.startswith(("memhp.controller", "memhp.report"))]
    for f, mods in _imports("memhp").items():
        if f != "memhp/cli.py":  # the umbrella command dispatches to the sides
            bad += [(f, m) for m in mods if m.startswith(("memhp.exporter", "memhp.controller", "memhp.report"))]
    assert not bad, bad


def test_the_read_model_stands_alone():
    """The controller's one import from the exporter stays narrow: the read model
    (memhp.exporter.kernel) imports only the standard library and its own modules,
    so importing it pulls in nothing else of the exporter (README, "Layout")."""
    import ast
    import sys

    bad = []
    for path in sorted((REPO / "exporter" / "kernel").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                if node.level > 1:  # above memhp.exporter.kernel
                    bad.append((str(path.relative_to(REPO)), "." * node.level + (node.module or "")))
                continue
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__":
                    bad.append((str(path.relative_to(REPO)), name))
    assert not bad, bad
