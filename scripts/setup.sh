#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (root): system packages the
# tests drive for real, and the project's virtualenv. Fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    util-linux            # lsmem --sysroot: the reference listing
    qemu-system-x86       # the real-kernel test bed (TCG)
    busybox-static cpio   # the guest's initramfs
    prometheus prometheus-alertmanager   # promtool, amtool, real servers in tests
    prometheus-node-exporter   # bench/steady_scrape.py: the reference scrape and series count
    chromium              # headless rendering of `memhp report`'s HTML in tests
    systemd               # systemd-analyze verify of deploy/systemd units
    openssl               # self-signed certificates for the TLS tests
    e2fsprogs             # chattr +i: a real EPERM for the actuator tests
    # The container image, built and run by tests/deploy/test_image_podman.py.
    # runc, not crun: crun cannot set rlimits on these machines (hybrid cgroups).
    podman buildah runc containernetworking-plugins uidmap
    etcd-server           # the fleet budget's store, real in tests/controller/fleet (etcd 3.4)
    debootstrap           # the stand-in for python:3.11-slim-bookworm (no registry here)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm run tsc on Grafana's types (tests/dashboards/test_schema.py).
# By command, not package: a machine may have Node from elsewhere (NodeSource's
# nodejs bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PY" -m venv .venv
fi
stamp=.venv/.memhp-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing memhp and its test dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    touch "$stamp"
fi

# TypeScript and Grafana's schema packages, pinned by package-lock.json, into
# tests/dashboards/schema/node_modules (gitignored).
schema_dir=tests/dashboards/schema
if [ ! -f "$schema_dir/node_modules/.memhp-installed" ] || [ "$schema_dir/package-lock.json" -nt "$schema_dir/node_modules/.memhp-installed" ]; then
    echo "setup: installing TypeScript and Grafana's schema packages (npm ci)"
    (cd "$schema_dir" && npm ci --no-audit --no-fund --loglevel=error)
    touch "$schema_dir/node_modules/.memhp-installed"
fi
