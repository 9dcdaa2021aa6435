"""A hypothesis state machine over the fleet budget: nodes acquire, release, crash, and
their leases expire, in any order; never more than N hold a slot, never more than M
actions start in an hour.  Run against the in-memory store with a fake clock
(test_budget_logic.py) and against a real etcd (test_budget_etcd.py)."""

from __future__ import annotations

import random
import threading

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from memhp.controller.fleet.budget import HOUR, Attempt, Budget, BudgetFull, Held, scopes

NODES = 6
N = 2  # concurrent slots
M = 5  # actions per hour
TTL = 5.0


class BudgetMachine(RuleBasedStateMachine):
    """Subclasses set ``make_store()`` and ``prefix``; ``clock`` is None for a real store (no time travel)."""

    prefix = "/memhp-test/"
    clock = None

    def make_store(self):
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.store = self.make_store()
        clock = self.clock or (lambda: 0.0)
        self.budgets = [
            Budget(self.store, TTL, holder={"node": i}, clock=clock, rng=random.Random(i)) for i in range(NODES)
        ]
        self.wanted = scopes(self.prefix, "r", N, M)
        self.looking: dict[int, Attempt] = {}  # nodes between begin() and commit()
        self.held: dict[int, Held] = {}  # live nodes that believe they hold a slot
        self.crashed: list[Held] = []  # slots of killed nodes, until their lease expires
        self.starts: list[float] = []  # when each acquired action started (hourly limit)
        self.stop = threading.Event()

    def now(self) -> float:
        return self.clock() if self.clock else 0.0

    @rule(node=st.integers(0, NODES - 1))
    def acquire(self, node: int) -> None:
        if node in self.held or node in self.looking:
            return
        try:
            self.held[node] = self.budgets[node].try_acquire(self.wanted)
        except BudgetFull:
            return
        self.starts.append(self.now())

    @rule(node=st.integers(0, NODES - 1))
    def look(self, node: int) -> None:
        """The first half of an acquire: pick free slots; other nodes may move before the commit."""
        if node in self.held or node in self.looking:
            return
        try:
            self.looking[node] = self.budgets[node].begin(self.wanted)
        except BudgetFull:
            return

    @precondition(lambda self: self.looking)
    @rule(data=st.data())
    def commit(self, data) -> None:
        node = data.draw(st.sampled_from(sorted(self.looking)))
        held = self.budgets[node].commit(self.looking.pop(node))
        if held is not None:
            self.held[node] = held
            self.starts.append(self.now())

    @rule(node=st.integers(0, NODES - 1))
    def release(self, node: int) -> None:
        h = self.held.pop(node, None)
        if h is not None:
            self.budgets[node].release(h)

    @rule(node=st.integers(0, NODES - 1))
    def crash(self, node: int) -> None:
        """kill -9: the node stops without releasing; its lease is no longer kept alive."""
        h = self.held.pop(node, None)
        if h is not None:
            self.crashed.append(h)

    @precondition(lambda self: self.crashed)
    @rule(data=st.data())
    def expire(self, data) -> None:
        """A crashed node's lease runs out (on a real store: what its expiry does, now)."""
        h = self.crashed.pop(data.draw(st.integers(0, len(self.crashed) - 1)))
        if self.clock is None:
            self.store.revoke(h.lease)
        else:
            self.keep_alive_live()
            self.advance(TTL + 0.1)
            self.keep_alive_live()

    def keep_alive_live(self) -> None:
        for node, h in list(self.held.items()):
            if not self.store.keepalive(h.lease):
                del self.held[node]  # lost: the executor stops before its next step

    def advance(self, dt: float) -> None:
        raise NotImplementedError

    @invariant()
    def never_more_than_n_hold(self) -> None:
        assert len(self.held) <= N, self.held
        assert len(self.store.keys(self.wanted[0].prefix, 100)) <= N

    @invariant()
    def never_more_than_m_start_in_an_hour(self) -> None:
        now = self.now()
        recent = [t for t in self.starts if now - t < HOUR]
        assert len(recent) <= M, recent
