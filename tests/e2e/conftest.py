"""The e2e tests boot QEMU guests through the test bed's fixtures (tests/vm)."""

from tests.vm.conftest import vm_bed, vm_guest_factory  # noqa: F401  (fixtures, re-exported for tests/e2e)
