# Entry points, all runnable on a fresh Debian 12 machine as root.
#   make test   the README's test command (CI runs exactly this): setup, the
#               quality gate (lint, typecheck), then the whole suite
#   make unit   the quick loop: no VM, no Prometheus/Alertmanager servers, no image build, no soak
.PHONY: setup run lint typecheck unit test fixtures

setup:
	./scripts/setup.sh

# The exporter against this machine's real /sys and /proc (read-only).
run: setup
	.venv/bin/memhp-exporter $(ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/python scripts/typecheck

unit: setup
	.venv/bin/python -m pytest -m "not vm and not prometheus and not image and not soak and not etcd" $(PYTEST_ARGS)

# The whole test suite, the VM test bed and real Prometheus included, after the gate.
test: lint typecheck
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Re-capture the fixture archives (tests/fixtures/*.tar.gz) from Debian's
# kernel in QEMU; SCENARIOS="imbalanced ..." for a subset (docs/testing.md).
fixtures: setup
	.venv/bin/python scripts/refresh-fixtures $(SCENARIOS)
