"""The budget logic on the in-memory store, time moved by hand (issue 22: the property test)."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import rule

from memhp.controller.fleet.budget import Budget, BudgetFull, MemoryStore, free_slot, scopes
from tests.helpers.controller import FakeClock

from .budget_machine import TTL, BudgetMachine


class MemoryBudgetMachine(BudgetMachine):
    def make_store(self):
        self._clock = FakeClock(1000.0)
        self.clock = self._clock
        return MemoryStore(self._clock)

    def advance(self, dt: float) -> None:
        self._clock.advance(dt)

    @rule(dt=st.floats(0, TTL * 0.9))
    def tick(self, dt: float) -> None:
        """Time passes; live nodes keep their leases alive (every TTL/3 in the real thread)."""
        self.keep_alive_live()
        self.advance(dt)
        self.keep_alive_live()

    @rule(dt=st.floats(600, 3000))
    def long_tick(self, dt: float) -> None:
        """Minutes pass at once: live leases lapse too (a controller stalled longer than its TTL)."""
        self.advance(dt)
        self.keep_alive_live()


TestMemoryBudget = MemoryBudgetMachine.TestCase
TestMemoryBudget.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_killed_holders_slot_frees_when_its_lease_expires_and_not_before():
    clock = FakeClock(0.0)
    store = MemoryStore(clock)
    a, b = Budget(store, TTL, clock=clock), Budget(store, TTL, clock=clock)
    wanted = scopes("/p/", "r", 1, None)
    a.try_acquire(wanted)  # then a is killed: nobody keeps its lease alive
    clock.advance(TTL - 0.5)
    try:
        b.try_acquire(wanted)
        raise AssertionError("acquired a slot still held")
    except BudgetFull as e:
        assert e.held == 1
    clock.advance(1.0)
    b.try_acquire(wanted)


def test_free_slot_finds_the_last_free_index_of_a_large_scope():
    (s,) = scopes("/p/", "r", 10_000, None)
    taken = {f"/p/concurrent/all/{i}" for i in range(10_000) if i != 7777}
    import random

    assert free_slot(s, taken, random.Random(1)) == "/p/concurrent/all/7777"
    assert free_slot(s, taken | {"/p/concurrent/all/7777"}, random.Random(1)) is None
