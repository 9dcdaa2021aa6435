import pytest

from tests.helpers.trees import capture_host


@pytest.fixture(scope="session")
def host_archive_root(tmp_path_factory):
    """A read-only capture of this machine's real /sys and /proc (never modified)."""
    return capture_host(tmp_path_factory.mktemp("host") / "root")


@pytest.fixture
def host_tree(tmp_path):
    """A private, mutable copy of this machine's captured tree."""
    return capture_host(tmp_path / "root")
