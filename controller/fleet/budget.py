"""The fleet-wide action budget: at most N nodes acting at once and at most M
actions started in any sliding hour, fleet-wide, for all rules and per rule.

The semaphore of CoreOS locksmith and kured's lock, on a key-value store with
leases (:class:`Store`; etcd in :mod:`.etcd`, an in-memory one here):

* a *scope* (all rules, or one rule; concurrent or hourly) has ``limit`` slot
  keys ``<prefix><scope>/<i>``, ``0 <= i < limit``;
* a node takes one free slot of every scope that applies, all at once, in one
  create-if-absent transaction: either it holds them all or none;
* concurrent slots are put on a lease of ``lease_ttl`` that the node keeps
  alive while it acts and revokes when done, so a node killed while acting
  frees its slots when the lease expires;
* hourly slots are put on a lease of one hour that nobody keeps alive: each
  is one action started, and frees itself an hour later (a sliding hour).

Anything the store cannot answer is :class:`BudgetUnavailable`: the caller
refuses the action (fail closed).  :func:`scopes` and :class:`MemoryStore`
are what a simulation (the backtest) needs to apply the same budget.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

HOUR = 3600.0
# A slot is looked for at random among the free indices this many times before a full scan.
_PROBES = 64
# Transactions lost to another node taking the same slot, retried at once before waiting.
_RACES = 3


class BudgetUnavailable(Exception):
    """The store did not answer, or answered garbage: nothing may act."""


class BudgetFull(Exception):
    """Every slot of a scope is held."""

    def __init__(self, scope: Scope, held: int) -> None:
        super().__init__(f"{scope.describe()}: {held} of {scope.limit} held")
        self.scope = scope
        self.held = held


@dataclass(frozen=True)
class Scope:
    """One limit: its keys live under ``prefix``; ``hourly`` slots stay an hour, the others while acting."""

    name: str  # "all" or "rule:<name>"
    hourly: bool
    limit: int
    prefix: str

    def describe(self) -> str:
        kind = "actions in the last hour" if self.hourly else "concurrent actions"
        who = "fleet-wide" if self.name == "all" else f"of rule {self.name[5:]}"
        return f"{kind} {who}"


def scopes(
    prefix: str,
    rule: str,
    max_concurrent: int,
    max_per_hour: int | None,
    rule_concurrent: int | None = None,
    rule_per_hour: int | None = None,
) -> list[Scope]:
    """The scopes an action of ``rule`` must get a slot of (fleet-wide first)."""
    out = [Scope("all", False, max_concurrent, f"{prefix}concurrent/all/")]
    if rule_concurrent is not None:
        out.append(Scope(f"rule:{rule}", False, rule_concurrent, f"{prefix}concurrent/rule/{rule}/"))
    if max_per_hour is not None:
        out.append(Scope("all", True, max_per_hour, f"{prefix}hourly/all/"))
    if rule_per_hour is not None:
        out.append(Scope(f"rule:{rule}", True, rule_per_hour, f"{prefix}hourly/rule/{rule}/"))
    return out


class Store(Protocol):
    """Keys with leases; every method raises BudgetUnavailable when it cannot answer."""

    def grant(self, ttl: float) -> str:
        """A new lease of ``ttl`` seconds; its id."""
        ...

    def keepalive(self, lease: str) -> bool:
        """Restart the lease's TTL; False when it has already expired."""
        ...

    def revoke(self, lease: str) -> None:
        """End the lease now; its keys go with it."""
        ...

    def keys(self, prefix: str, limit: int) -> set[str]:
        """The keys under ``prefix`` (at most ``limit``)."""
        ...

    def create_all(self, keys: Mapping[str, str], value: str) -> bool:
        """Create every key (key -> lease) if none exists, atomically; False if one already did."""
        ...

    def delete(self, keys: Iterable[str]) -> None: ...


def free_slot(scope: Scope, taken: set[str], rng: random.Random) -> str | None:
    """A key of ``scope`` that is not in ``taken``, or None when all are.

    At random, so that nodes racing for slots rarely pick the same one."""
    if len(taken) >= scope.limit:
        return None
    for _ in range(_PROBES):
        key = f"{scope.prefix}{rng.randrange(scope.limit)}"
        if key not in taken:
            return key
    return next((f"{scope.prefix}{i}" for i in range(scope.limit) if f"{scope.prefix}{i}" not in taken), None)


@dataclass(frozen=True)
class Attempt:
    """Slots picked, not yet taken."""

    lease: str
    hour_lease: str | None
    picked: dict[str, str]  # key -> lease


@dataclass
class Held:
    """Slots held for one action; ``lost`` is set when the lease could not be kept alive."""

    keys: tuple[str, ...]
    lease: str
    hour_lease: str | None
    waited: float
    lost: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


class Budget:
    """Takes and gives back slots on a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        lease_ttl: float,
        *,
        holder: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_error: Callable[[BudgetUnavailable], None] | None = None,
    ) -> None:
        self.store = store
        self.lease_ttl = lease_ttl
        self.value = json.dumps(dict(holder or {}), sort_keys=True)
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_error = on_error or (lambda e: None)

    # --- one try: look, then take ----------------------------------------------------------

    def begin(self, wanted: list[Scope]) -> Attempt:
        """Leases, and a free slot of every scope as the store shows them now; BudgetFull when a
        scope has none.  Another node may take the same slot before :meth:`commit`."""
        lease = self.store.grant(self.lease_ttl)
        hour_lease: str | None = None
        try:
            if any(s.hourly for s in wanted):
                hour_lease = self.store.grant(HOUR)
            picked: dict[str, str] = {}
            for s in wanted:
                taken = self.store.keys(s.prefix, s.limit)
                key = free_slot(s, taken, self.rng)
                if key is None:
                    raise BudgetFull(s, len(taken))
                picked[key] = hour_lease if s.hourly and hour_lease else lease
        except BaseException:
            self._forget(lease, hour_lease)
            raise
        return Attempt(lease, hour_lease, picked)

    def commit(self, attempt: Attempt) -> Held | None:
        """Take every slot of ``attempt`` at once; None (leases given back) when one was taken meanwhile."""
        try:
            won = self.store.create_all(attempt.picked, self.value)
        except BaseException:
            self._forget(attempt.lease, attempt.hour_lease)
            raise
        if not won:
            self._forget(attempt.lease, attempt.hour_lease)
            return None
        keys = tuple(k for k, lid in attempt.picked.items() if lid == attempt.lease)
        return Held(keys, attempt.lease, attempt.hour_lease, 0.0)

    def try_acquire(self, wanted: list[Scope]) -> Held:
        """All of ``wanted``'s slots now, or BudgetFull / BudgetUnavailable."""
        for _ in range(_RACES):
            held = self.commit(self.begin(wanted))
            if held is not None:
                return held
        raise BudgetFull(wanted[0], wanted[0].limit)  # lost every race: as good as full this time

    def _forget(self, lease: str, hour_lease: str | None) -> None:
        for lid in (lease, hour_lease):
            if lid is None:
                continue
            try:
                self.store.revoke(lid)
            except BudgetUnavailable:
                pass  # it expires by itself; an unused hour lease holds no key

    # --- waiting ---------------------------------------------------------------------------

    def acquire(self, wanted: list[Scope], wait: float, stop: threading.Event, poll: float = 1.0) -> Held:
        """Slots of every scope in ``wanted``, trying again until ``wait`` seconds passed.

        Raises the last BudgetFull or BudgetUnavailable once the wait is over (or ``stop`` is set)."""
        t0 = self.clock()
        while True:
            try:
                held = self.try_acquire(wanted)
                held.waited = self.clock() - t0
                return held
            except BudgetUnavailable as e:
                self.on_error(e)
                last: Exception = e
            except BudgetFull as e:
                last = e
            left = t0 + wait - self.clock()
            if left <= 0 or stop.is_set():
                raise last
            # Jittered, so that the nodes waiting for a slot do not all ask at the same instant.
            if stop.wait(min(left, poll * (0.5 + self.rng.random()))):
                raise last

    # --- holding and giving back -------------------------------------------------------------

    def keep(self, held: Held) -> threading.Thread:
        """A thread that keeps the slots' lease alive until ``held.done``; sets ``held.lost`` if it cannot."""

        def run() -> None:
            interval = self.lease_ttl / 3
            deadline = self.clock() + self.lease_ttl
            while not held.done.wait(interval):
                try:
                    alive = self.store.keepalive(held.lease)
                except BudgetUnavailable as e:
                    self.on_error(e)
                    alive = self.clock() < deadline - interval  # not yet known to be lost
                else:
                    if alive:
                        deadline = self.clock() + self.lease_ttl
                if not alive:
                    held.lost.set()
                    return

        t = threading.Thread(target=run, name="memhp-budget-keepalive", daemon=True)
        t.start()
        return t

    def release(self, held: Held) -> None:
        """Give the concurrent slots back (the hourly ones stay their hour); raises BudgetUnavailable."""
        held.done.set()
        self.store.delete(held.keys)
        self.store.revoke(held.lease)


class MemoryStore:
    """A :class:`Store` in memory with a clock of its own: for tests and simulations (the backtest).

    Same semantics as etcd's: a lease's keys vanish when it expires or is revoked."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.leases: dict[str, float] = {}  # id -> expiry
        self.ttl: dict[str, float] = {}
        self.data: dict[str, tuple[str, str]] = {}  # key -> (value, lease)
        self._next = 0
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = self.clock()
        for lid in [lid for lid, end in self.leases.items() if end <= now]:
            self._drop(lid)

    def _drop(self, lease: str) -> None:
        self.leases.pop(lease, None)
        self.ttl.pop(lease, None)
        for k in [k for k, (_, lid) in self.data.items() if lid == lease]:
            del self.data[k]

    def grant(self, ttl: float) -> str:
        with self._lock:
            self._next += 1
            lid = str(self._next)
            self.leases[lid] = self.clock() + ttl
            self.ttl[lid] = ttl
            return lid

    def keepalive(self, lease: str) -> bool:
        with self._lock:
            self._expire()
            if lease not in self.leases:
                return False
            self.leases[lease] = self.clock() + self.ttl[lease]
            return True

    def revoke(self, lease: str) -> None:
        with self._lock:
            self._drop(lease)

    def keys(self, prefix: str, limit: int) -> set[str]:
        with self._lock:
            self._expire()
            return {k for k in self.data if k.startswith(prefix)}

    def create_all(self, keys: Mapping[str, str], value: str) -> bool:
        with self._lock:
            self._expire()
            if any(k in self.data for k in keys) or any(lid not in self.leases for lid in keys.values()):
                return False
            for k, lid in keys.items():
                self.data[k] = (value, lid)
            return True

    def delete(self, keys: Iterable[str]) -> None:
        with self._lock:
            for k in keys:
                self.data.pop(k, None)
