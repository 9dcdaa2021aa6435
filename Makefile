# Two entry points, both runnable on a fresh Debian 12 machine as root.
.PHONY: setup run test

setup:
	./scripts/setup.sh

# The exporter against this machine's real /sys and /proc (read-only).
run: setup
	.venv/bin/memhp-exporter $(ARGS)

# The whole test suite, the VM test bed and real Prometheus included.
test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

# Re-capture the fixture archives (tests/fixtures/*.tar.gz) from Debian's
# kernel in QEMU; SCENARIOS="imbalanced ..." for a subset (docs/testing.md).
.PHONY: fixtures
fixtures: setup
	.venv/bin/python scripts/refresh-fixtures $(SCENARIOS)
