import sys


def pytest_terminal_summary(terminalreporter):
    """The image's measured size and build time (test_image_podman.py), in every run's output."""
    mod = sys.modules.get("tests.deploy.test_image_podman")
    for line in getattr(mod, "REPORT", []):
        terminalreporter.write_line(line)
