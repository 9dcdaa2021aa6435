"""The QEMU test bed's report header, when pytest is started on tests/vm.

The bed's fixtures (``vm_bed``, ``vm_guest_factory``, ``vm_guest``) are the
plugin tests/vm/fixtures.py, registered in tests/conftest.py.
"""

from __future__ import annotations

import os

from tests.vm.kernel import KernelUnavailable, resolve_package


def pytest_report_header(config):
    # Shown when pytest is started on tests/vm (conftest loaded at start-up).
    try:
        pkg, ver = resolve_package()
        return [f"memhp vm: kernel {pkg} {ver}, accel {os.environ.get('MEMHP_VM_ACCEL', 'tcg')}"]
    except KernelUnavailable as e:
        return [f"memhp vm: kernel not resolvable: {e}"]
