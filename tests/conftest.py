# Fixtures shared across test folders, registered once here (never imported
# by name into test modules or other conftest files): real Alertmanager and
# Prometheus factories, the controller's webhook server, and the QEMU test bed
# (tests/vm and tests/e2e).
pytest_plugins = ["tests.helpers.alertmanager", "tests.helpers.prometheus", "tests.helpers.web", "tests.vm.fixtures"]


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/fixtures/golden/*.prom from the current exporter output",
    )
