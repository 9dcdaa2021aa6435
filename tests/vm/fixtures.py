"""pytest fixtures of the QEMU real-kernel test bed (see docs/testing.md), a
plugin registered once in tests/conftest.py's ``pytest_plugins`` so that
every folder (tests/vm, tests/e2e, ...) gets the same session-wide bed:

    pytestmark = pytest.mark.vm

    def test_something(vm_guest):                      # the shared default guest
        ...

    def test_numa(vm_guest_factory):
        g = vm_guest_factory(numa=("512M", "512M"))     # shared per configuration
        g2 = vm_guest_factory(VMConfig(...), fresh=True)  # a private guest

A missing QEMU, kernel or busybox is a test *failure* with a clear message,
never a skip.  Nothing boots unless a test asks for one of these fixtures.
"""

from __future__ import annotations

import collections
import os

import pytest

from tests.vm.guest import Guest, TestBed, VMConfig, VMError
from tests.vm.kernel import KernelUnavailable

_state: dict = {"bed": None, "error": None, "guests": collections.OrderedDict(), "fresh": [], "boots": []}
MAX_SHARED = int(os.environ.get("MEMHP_VM_MAX_GUESTS", "3"))


def pytest_terminal_summary(terminalreporter):
    bed: TestBed | None = _state["bed"]
    if bed is None and _state["error"] is None:
        return
    tr = terminalreporter
    tr.section("memhp QEMU test bed")
    if _state["error"] or bed is None:
        tr.write_line(f"test bed unavailable: {_state['error']}")
        return
    tr.write_line(f"kernel: {bed.kernel.describe}")
    tr.write_line(f"qemu: {bed.qemu_version}")
    tr.write_line("prepare: " + ", ".join(f"{k} {v:.2f}s" for k, v in bed.timings.items()))
    for label, accel, t in _state["boots"]:
        tr.write_line(f"boot [{label}] -accel {accel}: " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))


@pytest.fixture(scope="session")
def vm_bed(tmp_path_factory) -> TestBed:
    """Kernel fetched (cached), initramfs built, QEMU found."""
    if _state["error"]:
        pytest.fail(_state["error"], pytrace=False)
    if _state["bed"] is None:
        try:
            _state["bed"] = TestBed.prepare(tmp_path_factory.mktemp("vm"))
        except (KernelUnavailable, VMError, OSError) as e:
            _state["error"] = f"QEMU test bed cannot start: {e}"
            pytest.fail(_state["error"], pytrace=False)
    return _state["bed"]


@pytest.fixture(scope="session")
def vm_guest_factory(vm_bed):
    """``factory(config=None, *, fresh=False, **VMConfig fields) -> Guest``.

    Guests are shared per configuration for the session (at most
    ``MEMHP_VM_MAX_GUESTS`` alive at once, least recently used are shut down);
    ``fresh=True`` boots a private guest that is closed at session end.
    Tests sharing a guest must leave it as they found it (unplug what they
    plugged, clear injected errors).
    """
    shared: collections.OrderedDict = _state["guests"]

    def factory(config: VMConfig | None = None, *, fresh: bool = False, **kw) -> Guest:
        config = config or VMConfig(**kw)
        if not fresh and config in shared and shared[config]._alive():
            shared.move_to_end(config)
            return shared[config]
        if not fresh:
            while len(shared) >= MAX_SHARED:
                _, old = shared.popitem(last=False)
                old.close()
        try:
            g = vm_bed.boot(config)
        except (VMError, TimeoutError) as e:
            pytest.fail(f"guest [{config.label()}] did not boot: {e}", pytrace=False)
        _state["boots"].append((config.label(), g.accel, dict(g.timings)))
        if fresh:
            _state["fresh"].append(g)
        else:
            shared[config] = g
        return g

    yield factory
    for g in list(shared.values()) + _state["fresh"]:
        g.close()
    shared.clear()
    _state["fresh"].clear()


@pytest.fixture
def vm_guest(vm_guest_factory) -> Guest:
    """The shared default guest: 1G boot memory, slots=4, maxmem=8G, no NUMA."""
    return vm_guest_factory(VMConfig())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for g in list(_state["guests"].values()) + _state["fresh"]:
            rep.sections.append((f"guest console [{g.config.label()}] {g.console_path}", g.console_tail(80)))
