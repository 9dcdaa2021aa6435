"""Debian's podman, configured for this sandbox by the tests themselves.

Everything podman reads or writes lives under ``PODMAN_HOME`` (default
``/var/tmp/memhp-podman``, kept between runs as a build cache); the machine's
own /etc/containers and /var/lib/containers are never touched. The
configuration is passed with podman's own environment variables
(``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF``,
``CONTAINERS_REGISTRIES_CONF``), see :func:`podman_env`.

Facts about the sandbox this encodes (docs/deploy.md, "Building with podman"):

* crun cannot set rlimits here and does not support the hybrid cgroup
  layout, so the runtime is ``runc`` with explicit default ulimits;
* no image registry can be reached, so the base image ``python:3.11-slim-bookworm``
  is replaced by a stand-in made with ``debootstrap`` (:func:`standin_base`),
  named through the Dockerfile's ``ARG PYTHON_IMAGE``;
* outbound HTTPS goes through a CA only the host's bundle trusts, so a build
  mounts that bundle and a pip.conf naming it (:func:`build_volumes`);
* podman's default OCI image format drops ``HEALTHCHECK``: builds use
  ``--format docker``.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PODMAN_HOME = Path(os.environ.get("MEMHP_PODMAN_HOME", "/var/tmp/memhp-podman"))
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")

CONTAINERS_CONF = """\
# Written by tests/helpers/podman.py: podman for the memhp test suite.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
# Not a Kubernetes pod: no /etc/hosts entries or DNS needed for --network none.
netns = "none"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "{home}/tmp"
"""

STORAGE_CONF = """\
# Written by tests/helpers/podman.py.
[storage]
driver = "overlay"
graphroot = "{home}/storage"
runroot = "{home}/run"
"""

# Only the stand-in (localhost/...) is ever used; no short name resolves to a registry.
REGISTRIES_CONF = """\
# Written by tests/helpers/podman.py.
unqualified-search-registries = []
"""

# ----------------------------------------------------------------- the stand-in for python:3.11-slim-bookworm

STANDIN_NAME = "localhost/memhp-standin-python"
# The Debian archive as this machine's apt reaches it (its own sources), so the
# stand-in is made from, and later updates from, the same mirror.
HOST_APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")
# What python:3.11-slim-bookworm has that matters to the Dockerfile: Debian 12,
# ca-certificates, Python 3.11 with venv, and pip/setuptools/wheel installed in
# /usr/local (not Debian-managed: `pip uninstall` must work), `python` on PATH.
STANDIN_PACKAGES = ["python3", "python3-venv", "ca-certificates"]
STANDIN_PIP = ["pip==24.0", "setuptools==65.5.1", "wheel==0.45.1"]

# The official images' apt/dpkg settings (debuerreotype's docker-* files and
# --slimify): without docker-clean every apt layer keeps ~80 MB of caches.
APT_DOCKER_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
APT_FILES = {
    "etc/apt/apt.conf.d/docker-clean": APT_DOCKER_CLEAN,
    "etc/apt/apt.conf.d/docker-gzip-indexes": 'Acquire::GzipIndexes "true";\n',
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests": 'Apt::AutoRemove::SuggestsImportant "false";\n',
    "etc/dpkg/dpkg.cfg.d/docker": (
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n"
        "path-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n"
        "path-exclude /usr/share/lintian/*\n"
    ),
}
STANDIN_CHANGES = [
    "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
]


def host_debian_sources() -> str:
    """The machine's Debian sources in deb822 form, comments dropped."""
    if not HOST_APT_SOURCES.exists():
        raise RuntimeError(f"{HOST_APT_SOURCES} is missing: the stand-in base reuses this machine's Debian sources")
    lines = [ln for ln in HOST_APT_SOURCES.read_text().splitlines() if not ln.lstrip().startswith("#")]
    return "\n".join(lines).strip() + "\n"


def debian_mirror(sources: str) -> str:
    """The URI of the stanza that carries bookworm itself (MEMHP_DEBIAN_MIRROR overrides)."""
    if os.environ.get("MEMHP_DEBIAN_MIRROR"):
        return os.environ["MEMHP_DEBIAN_MIRROR"]
    for stanza in re.split(r"\n\s*\n", sources):
        fields = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in stanza.splitlines()) if v}
        if "bookworm" in fields.get("Suites", "").split():
            return fields["URIs"].split()[0]
    raise RuntimeError(f"no bookworm stanza in {HOST_APT_SOURCES}")


def apt_files() -> dict[str, str]:
    return {**APT_FILES, "etc/apt/sources.list.d/debian.sources": host_debian_sources()}


def standin_recipe() -> str:
    """Everything the stand-in is made from; its hash names the cached rootfs."""
    return json.dumps(
        {
            "suite": "bookworm",
            "variant": "minbase",
            "packages": STANDIN_PACKAGES,
            "pip": STANDIN_PIP,
            "files": apt_files(),
            "mirror": debian_mirror(host_debian_sources()),
            "changes": STANDIN_CHANGES,
            "steps": 4,  # bump when make_rootfs changes
        },
        sort_keys=True,
    )


def standin_key() -> str:
    return hashlib.sha256(standin_recipe().encode()).hexdigest()[:16]


def _run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def make_rootfs(root: Path) -> None:
    """debootstrap a minimal bookworm into ROOT and make it look like the official slim image."""
    # In a mount namespace of its own: debootstrap mounts proc and sysfs inside ROOT
    # and unmounts them on exit, but not when killed; its namespace dies with it.
    _run(
        [
            "unshare",
            "--mount",
            "--propagation=private",
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(STANDIN_PACKAGES)}",
            "bookworm",
            str(root),
            debian_mirror(host_debian_sources()),
        ],
        timeout=1800,
    )
    for rel, text in apt_files().items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "etc/apt/sources.list").unlink(missing_ok=True)
    # The official image's Python is not Debian-managed; pip may change /usr/local.
    for marker in (root / "usr/lib").glob("python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    # pip, setuptools and wheel into /usr/local (Debian's scheme for root outside a
    # venv), from wheels fetched by the host's pip (which trusts the sandbox's CA),
    # installed offline in the chroot.
    wheels = root / "tmp/wheels"
    wheels.mkdir()
    _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(wheels)]
        + STANDIN_PIP,
        timeout=600,
    )
    pip_whl = next(wheels.glob("pip-*.whl"))
    _run(
        [
            "chroot",
            str(root),
            "/usr/bin/python3",
            f"/tmp/wheels/{pip_whl.name}/pip",
            "install",
            "-q",
            "--no-index",
            "--find-links=/tmp/wheels",
            *STANDIN_PIP,
        ],
        timeout=600,
    )
    shutil.rmtree(wheels)
    (root / "usr/local/bin/python").symlink_to("/usr/bin/python3")
    _slimify(root)


def _slimify(root: Path) -> None:
    """What the dpkg path-excludes would have left out, had they been there during debootstrap."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*_*", "usr/share/man/*", "usr/share/info/*"):
        for p in root.glob(pattern):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in root.glob("usr/share/doc/*/*"):
        if p.name != "copyright":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in list(root.glob("usr/local/lib/python3*/**/__pycache__")):
        shutil.rmtree(p)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split()[4])
        if point.startswith(prefix):
            out.append(point)
    return out


def _remove_tree(path: Path) -> None:
    """rm -r PATH, never across a mount point: a proc or sysfs left mounted inside a
    half-made rootfs is the machine's own, so deleting through it is out of the question."""
    for point in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], check=False)
    left = _mounts_below(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted below it: {left}")
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder of the stand-in at a time (several worktrees may run the tests)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def standin_rootfs_tar() -> Path:
    """The cached rootfs tarball, made (about 3 minutes) when its recipe changed."""
    cache = PODMAN_HOME / "standin"
    tar = cache / f"python-3.11-bookworm-{standin_key()}.tar"
    with _locked(cache / "lock"):
        if tar.exists():
            return tar
        tmp = Path(tempfile.mkdtemp(dir=cache))
        try:
            root = tmp / "root"
            make_rootfs(root)
            _run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", f"{tar}.part", "."], timeout=600)
            os.replace(f"{tar}.part", tar)
        finally:
            _remove_tree(tmp)
        for old in cache.glob("python-3.11-bookworm-*.tar"):
            if old != tar:
                old.unlink()
        return tar


def podman_env() -> dict[str, str]:
    """The environment podman and buildah need here, config files written under PODMAN_HOME."""
    conf = PODMAN_HOME / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    for d in ("tmp", "storage", "run"):
        (PODMAN_HOME / d).mkdir(exist_ok=True)
    files = {
        "containers.conf": CONTAINERS_CONF.format(home=PODMAN_HOME),
        "storage.conf": STORAGE_CONF.format(home=PODMAN_HOME),
        "registries.conf": REGISTRIES_CONF,
    }
    for name, text in files.items():
        p = conf / name
        if not p.exists() or p.read_text() != text:
            p.write_text(text)
    env = dict(os.environ)
    env.update(
        CONTAINERS_CONF=str(conf / "containers.conf"),
        CONTAINERS_STORAGE_CONF=str(conf / "storage.conf"),
        CONTAINERS_REGISTRIES_CONF=str(conf / "registries.conf"),
    )
    return env


def podman(*args: str, env: dict[str, str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {r.returncode}:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}")
    return r


def standin_base(env: dict[str, str]) -> str:
    """The stand-in base image in podman's store, imported from the cached rootfs when missing."""
    ref = f"{STANDIN_NAME}:{standin_key()}"
    if podman("image", "exists", ref, env=env, check=False).returncode != 0:
        tar = standin_rootfs_tar()
        changes = [a for c in STANDIN_CHANGES for a in ("--change", c)]
        podman("import", *changes, str(tar), ref, env=env)
        # Stand-ins of older recipes: nothing builds on them any more.
        listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", STANDIN_NAME, env=env, check=False)
        for old in listed.stdout.split():
            if old.startswith(f"{STANDIN_NAME}:") and old != ref:
                podman("rmi", old, env=env, check=False)
    return ref


def build_volumes(scratch: Path) -> list[str]:
    """--volume arguments that make the build's pip trust the sandbox's CA.

    pip reads /etc/pip.conf; both files are mounted, never part of a layer."""
    pip_conf = scratch / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/memhp-build-ca.crt\n")
    return [
        f"--volume={HOST_CA}:/etc/memhp-build-ca.crt:ro",
        f"--volume={pip_conf}:/etc/pip.conf:ro",
    ]
