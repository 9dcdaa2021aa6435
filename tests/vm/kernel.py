"""Debian's own kernel for the QEMU test bed.

``fetch_kernel()`` resolves the package that ``linux-image-amd64`` depends on
(``apt-cache depends``), downloads it with ``apt-get download``, unpacks it
with ``dpkg-deb -x`` and caches the result under
``$MEMHP_CACHE_DIR/kernel/<package>_<version>/`` (default
``~/.cache/memhp``).  Nothing is installed on the host.

Run as a script to pre-fetch: ``.venv/bin/python tests/vm/kernel.py``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

META_PACKAGE = "linux-image-amd64"


class KernelUnavailable(RuntimeError):
    """The kernel could not be found or fetched: a test failure, not a skip."""


def cache_root() -> Path:
    env = os.environ.get("MEMHP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "memhp"


@dataclasses.dataclass(frozen=True)
class Kernel:
    package: str  # linux-image-6.1.0-57-amd64
    version: str  # Debian package version, 6.1.192-3
    release: str  # uname -r, 6.1.0-57-amd64
    root: Path  # the unpacked package
    vmlinuz: Path
    modules: Path  # lib/modules/<release>

    @property
    def describe(self) -> str:
        return f"{self.package} {self.version} (uname -r {self.release})"

    def module_path(self, name: str) -> Path:
        """Path of module ``name`` (``-`` and ``_`` are interchangeable)."""
        idx = _module_index(self.modules)
        key = name.replace("-", "_")
        if key not in idx:
            raise KernelUnavailable(f"module {name} not found under {self.modules}")
        return idx[key]


_INDEX: dict[Path, dict[str, Path]] = {}


def _module_index(moddir: Path) -> dict[str, Path]:
    if moddir not in _INDEX:
        idx = {}
        for p in (moddir / "kernel").rglob("*.ko*"):
            base = p.name
            for suf in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
                if base.endswith(suf):
                    idx[base[: -len(suf)].replace("-", "_")] = p
                    break
        _INDEX[moddir] = idx
    return _INDEX[moddir]


def _run(argv, **kw) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, **kw)
    except FileNotFoundError as e:
        raise KernelUnavailable(f"{argv[0]} not found: {e}") from None
    if p.returncode:
        raise KernelUnavailable(f"{' '.join(map(str, argv))} failed (rc {p.returncode}): {p.stderr.strip()}")
    return p.stdout


def resolve_package() -> tuple[str, str]:
    """(package, candidate version) that linux-image-amd64 depends on."""
    out = _run(["apt-cache", "depends", META_PACKAGE])
    m = re.search(r"^\s*Depends:\s*(linux-image-\S+)", out, re.M)
    if not m:
        raise KernelUnavailable(f"apt-cache depends {META_PACKAGE} names no linux-image package:\n{out}")
    pkg = m.group(1)
    pol = _run(["apt-cache", "policy", pkg])
    v = re.search(r"Candidate:\s*(\S+)", pol)
    if not v or v.group(1) == "(none)":
        raise KernelUnavailable(f"no candidate version for {pkg}:\n{pol}")
    return pkg, v.group(1)


def _load(dest: Path, pkg: str, version: str) -> Kernel:
    boot = dest / "boot"
    images = sorted(boot.glob("vmlinuz-*"))
    if not images:
        raise KernelUnavailable(f"no vmlinuz in {boot}")
    release = images[0].name[len("vmlinuz-") :]
    moddir = dest / "lib" / "modules" / release
    if not moddir.is_dir():
        raise KernelUnavailable(f"no modules directory {moddir}")
    return Kernel(pkg, version, release, dest, images[0], moddir)


def _cached(pkg: str | None = None) -> Kernel | None:
    base = cache_root() / "kernel"
    if not base.is_dir():
        return None
    for d in sorted(base.iterdir(), reverse=True):
        if (d / ".complete").exists() and (pkg is None or d.name.startswith(pkg + "_")):
            name, _, ver = d.name.partition("_")
            return _load(d, name, ver)
    return None


def fetch_kernel(log=print) -> Kernel:
    """Return the cached kernel, downloading and unpacking it if needed.

    ``MEMHP_KERNEL_DIR`` may point at an already unpacked package tree
    (``boot/vmlinuz-*`` and ``lib/modules/*``) to bypass apt entirely.
    """
    override = os.environ.get("MEMHP_KERNEL_DIR")
    if override:
        return _load(Path(override), "MEMHP_KERNEL_DIR", "local")
    try:
        pkg, version = resolve_package()
    except KernelUnavailable:
        # apt metadata unavailable (offline?): fall back to any cached kernel.
        k = _cached()
        if k:
            return k
        if os.geteuid() != 0:
            raise
        # A fresh machine whose package lists were cleaned: refresh them once.
        log("memhp: apt-cache cannot resolve the kernel; running apt-get update")
        _run(["apt-get", "update", "-q"])
        pkg, version = resolve_package()
    dest = cache_root() / "kernel" / f"{pkg}_{version}"
    if (dest / ".complete").exists():
        return _load(dest, pkg, version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions download once
        if (dest / ".complete").exists():
            return _load(dest, pkg, version)
        log(f"memhp: fetching {pkg} {version} with apt-get download")
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            _run(["apt-get", "download", f"{pkg}={version}"], cwd=tmp)
            debs = list(Path(tmp).glob("*.deb"))
            if len(debs) != 1:
                raise KernelUnavailable(f"apt-get download produced {debs}")
            unpack = Path(tmp) / "root"
            _run(["dpkg-deb", "-x", str(debs[0]), str(unpack)])
            if dest.exists():
                shutil.rmtree(dest)
            unpack.rename(dest)
        (dest / ".complete").write_text(f"{pkg} {version}\n")
    return _load(dest, pkg, version)


if __name__ == "__main__":
    print(fetch_kernel().describe)
