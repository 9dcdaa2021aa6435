"""This machine's real /sys and /proc, captured once per session (a
subprocess running tests/vm/capture.py, read-only) and unpacked where tests
need it."""

import pytest

from tests.helpers.trees import capture_host_archive, unpack


@pytest.fixture(scope="session")
def host_archive(tmp_path_factory):
    """The capture of this machine's tree, as an archive: taken once per session."""
    return capture_host_archive(tmp_path_factory.mktemp("host") / "host.tar.gz")


@pytest.fixture(scope="session")
def host_archive_root(host_archive, tmp_path_factory):
    """A read-only capture of this machine's real /sys and /proc (never modified)."""
    return unpack(host_archive, tmp_path_factory.mktemp("host-root") / "root")


@pytest.fixture
def host_tree(host_archive, tmp_path):
    """A private, mutable copy of this machine's captured tree."""
    return unpack(host_archive, tmp_path / "root")
