# memhp: one image, three programs, chosen by the command.
#
#   memhp-exporter (the default CMD): reads /sys, /proc and (optionally)
#     /dev/kmsg; never writes. Runs as the unprivileged user memhp (10301).
#   memhp-controller: writes /sys/devices/system/memory/memoryN/state. It
#     must run as uid 0 (the state files are root-owned, mode 0644) with a
#     WRITABLE bind mount of the host's /sys/devices/system/memory; the
#     kernel checks no capability for that write, so every capability can
#     be dropped. See docs/deploy.md, "What each privilege is for".
#
#   memhp-relay: fans Alertmanager's webhooks out to each node's controller
#     (docs/relay.md); stateless, unprivileged (uid 10301), writes nothing.
#
#   docker run IMAGE                                  # exporter, :10301
#   docker run IMAGE memhp-exporter --once --path.sysfs=/host/sys --path.procfs=/host/proc
#   docker run --user 0 IMAGE memhp-controller --config.file=...
#   docker run IMAGE memhp-relay --web.listen-address=:10303 --web.auth.bearer-token-file=...
#
# Dependencies are pinned by constraints.txt (PIP_CONSTRAINT). This file is
# linted by hadolint, and the image built with podman and run, in the test
# suite (tests/deploy/test_image_podman.py; docs/deploy.md, "Building with podman").

# The base of both stages: a mirror's copy, or (in the tests, where no
# registry can be reached) a debootstrap stand-in with the same layout.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CONSTRAINT=/src/constraints.txt \
    PIP_ONLY_BINARY=:all:

WORKDIR /src
# LICENSE: pyproject's license-files, carried in the wheel's metadata.
COPY constraints.txt pyproject.toml README.md LICENSE ./
# memhp/ carries memhp/thresholds.yaml too: package data `memhp report` reads.
COPY memhp/ memhp/
COPY exporter/ exporter/
COPY controller/ controller/
COPY report/ report/

# The wheel is built here (setuptools and wheel pinned by the constraints),
# then installed with its pinned runtime dependencies, all binary wheels, into
# a venv without pip: the only thing the final stage copies.
RUN pip wheel --no-deps --no-binary=memhp --wheel-dir /wheels /src \
 && python -m venv --without-pip /opt/memhp/venv \
 && pip --python /opt/memhp/venv/bin/python install /wheels/memhp-*.whl

# ---------------------------------------------------------------- final stage
FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="memhp" \
      org.opencontainers.image.description="Prometheus exporter (memhp-exporter) and alert-driven remediation controller (memhp-controller) for Linux memory hot(un)plug" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm" \
      io.memhp.exporter.privileges="non-root (uid 10301); read-only /sys and /proc; /dev/kmsg only with --collector.offline_failures, which needs CAP_SYSLOG and, in a container, privileged (device cgroup)" \
      io.memhp.controller.privileges="uid 0 (root-owned sysfs files); writable bind mount of /sys/devices/system/memory; no capability needed (drop ALL)" \
      io.memhp.relay.privileges="non-root (uid 10301); no host access; writes nothing"

# libudev1: pyudev's netlink monitor (uevents collector), loaded with ctypes.
# pip, setuptools and wheel are removed: nothing in this stage installs or builds.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libudev1=252.* \
 && rm -rf /var/lib/apt/lists/* \
 && python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 10301 memhp \
 && useradd --system --uid 10301 --gid memhp --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin memhp

COPY --from=build /opt/memhp/venv /opt/memhp/venv
COPY deploy/docker/healthcheck.py /opt/memhp/healthcheck.py

# MEMHP_REVISION: what --version and memhp_build_info say the git revision is.
ENV PATH=/opt/memhp/venv/bin:$PATH \
    MEMHP_REVISION=${REVISION} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# Exporter (default command), controller (webhook, /metrics, /-/healthy) and relay.
EXPOSE 10301 10302 10303

USER 10301:10301

HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "/opt/memhp/healthcheck.py"]

CMD ["memhp-exporter"]
