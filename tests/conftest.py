# Fixtures shared across test folders, registered once here (never imported
# by name into test modules).
pytest_plugins = ["tests.helpers.alertmanager"]


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite tests/fixtures/golden/*.prom from the current exporter output",
    )
