"""The event path: hot-added blocks onlined within about a second, through the executor.

:class:`AddedBlocks` coalesces the kernel's ``add`` uevents (a virtio-mem
resize adds dozens of blocks at once): each block waits ``event_settle`` so
the kernel's auto-online and udev rules get their chance first, then every
block that is due is taken in one batch, in address order.

:class:`HotAdd` runs the first ``event: memory-added`` rule for each block of
a batch, one after the other on one thread (no write races another), each as
one action through :meth:`Executor.execute` -- the same guards (pause,
quarantine, ratio, hourly and per-action caps, fleet budget and gate where
configured), actuator (bounded retries) and journal as an alert's action.
Each block's occurrence is ``memory-added:memoryN`` at ``<boot id>:<inode of
its sysfs directory>``, so the journal onlines one addition of one block at
most once, across restarts, and a block added again after a removal is a new
occurrence.  A block another writer onlined first (auto-online, a udev rule,
chmem) is a success, counted as ``already_online``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.memory_blocks import read_block, read_blocks
from memhp.exporter.kernel.paths import Paths

from .config import Config, Rule
from .executor import ActionOutcome, Executor, Origin
from .guards import Guards, Occurrence
from .metrics import ControllerMetrics
from .policy import Request
from .records import Reconcile, ReconcileAction
from .sources.uevents import block_identity, read_boot_id
from .vocab import Action, Event, Outcome, Result, Status

log = logging.getLogger(__name__)

EVENT_MEMORY_ADDED = Event.MEMORY_ADDED
SOURCE = "event"
PREFIX = f"{EVENT_MEMORY_ADDED}:"  # of an event occurrence's fingerprint
COALESCE = 0.1  # seconds: blocks whose settle ends this close to a batch's first one join it
MAX_PENDING = 1 << 16  # blocks waiting; far more than any machine's hot-pluggable blocks

# The outcome of one added block (memhp_controller_memory_added_blocks_total{result}).
ONLINED = "onlined"
ALREADY_ONLINE = "already_online"
REFUSED = "refused"
FAILED = "failed"
DUPLICATE = "duplicate"
DRY_RUN = "dry_run"
GONE = "gone"
NOT_READY = "not_ready"  # still not linked to its node after MAX_NOT_READY looks

MAX_NOT_READY = 100
NOT_READY_DELAY = 0.1  # seconds between two looks at a block the kernel is still adding


def event_rule(cfg: Config) -> Rule | None:
    """The rule hot-added memory runs (the first ``event: memory-added`` rule), or None: the path is off."""
    return next((r for r in cfg.rules if r.event == EVENT_MEMORY_ADDED), None)


class AddedBlocks:
    """Blocks added and not yet handled, each with the time its uevent arrived (None: found by a rescan)."""

    def __init__(self, settle: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.settle = settle
        self.clock = clock
        self._cond = threading.Condition()
        self._pending: dict[int, tuple[float, float | None]] = {}  # block -> (due, uevent time)
        self._rescan: str = ""
        self.dropped = 0

    def added(self, block: int, at: float | None) -> None:
        with self._cond:
            if block not in self._pending and len(self._pending) >= MAX_PENDING:
                self.dropped += 1
                return
            now = self.clock()
            self._pending[block] = ((at if at is not None else now) + self.settle, at)
            self._cond.notify_all()

    def later(self, block: int, at: float | None, delay: float) -> None:
        """Look at ``block`` again in ``delay`` seconds, keeping its uevent time."""
        with self._cond:
            self._pending[block] = (self.clock() + delay, at)
            self._cond.notify_all()

    def removed(self, block: int) -> None:
        with self._cond:
            self._pending.pop(block, None)

    def rescan(self, why: str) -> None:
        with self._cond:
            self._rescan = why
            self._cond.notify_all()

    def wait(self, stop: threading.Event, longest: float = 1.0) -> tuple[str, list[tuple[int, float | None]]]:
        """(rescan reason or "", the due blocks in address order), after waiting at most ``longest``."""
        with self._cond:
            self._wait_due_locked(stop, longest)
            why, self._rescan = self._rescan, ""
            due = self._due_locked()
            for b, _ in due:
                del self._pending[b]
        return why, due

    def _wait_due_locked(self, stop: threading.Event, longest: float) -> None:
        deadline = self.clock() + longest
        coalesce = min(self.settle, COALESCE)
        while not self._rescan and not stop.is_set():
            now = self.clock()
            dues = [d for d, _ in self._pending.values()]
            first = min(dues, default=deadline)
            # A burst: blocks due shortly after the first one wait for each other, so the batch
            # is onlined in address order rather than in the order the uevents happened to arrive.
            target = max(d for d in (*dues, first) if d <= first + coalesce) if first <= now else first
            target = min(target, deadline)
            if target <= now:
                return
            self._cond.wait(target - now)

    def _due_locked(self) -> list[tuple[int, float | None]]:
        now = self.clock()
        return sorted((b, at) for b, (due, at) in self._pending.items() if due <= now)

    def __len__(self) -> int:
        with self._cond:
            return len(self._pending)


class HotAdd:
    """Runs the event rule for each added block, one at a time, in address order."""

    def __init__(
        self,
        cfg: Config,
        rule: Rule,
        paths: Paths,
        executor: Executor,
        guards: Guards,
        metrics: ControllerMetrics,
        stop: threading.Event,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.rule = rule
        self.paths = paths
        self.executor = executor
        self.guards = guards
        self.metrics = metrics
        self.stop = stop
        self.clock = clock
        self.blocks = AddedBlocks(cfg.controller.event_settle, clock)
        self.boot_id = read_boot_id(paths)
        self._thread: threading.Thread | None = None
        self._not_ready: dict[int, int] = {}  # block -> looks while the kernel was still adding it
        self._retry: set[int] = set()  # blocks whose first action was interrupted before its write took

    # --- the loop -----------------------------------------------------------------------------

    def start(self) -> HotAdd:
        self._thread = threading.Thread(target=self.run, name="memhp-controller-hotadd", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                why, due = self.blocks.wait(self.stop)
                if why:
                    self.rescan(why)
                self.handle_batch(due)
            except Exception:  # the loop goes on; the alert path is the safety net
                log.exception("event path: error while handling added blocks; continuing")
                self.metrics.internal_errors.labels("event").inc()
                self.stop.wait(1.0)

    def rescan(self, why: str) -> None:
        """Queue every offline block that may be hot-added memory nobody onlined yet.

        Not the blocks the journal says memhp offlined on purpose, and not an addition
        already acted on (same boot, same sysfs directory): after a restart this finds what
        was added while the controller was down, and nothing it already did.
        """
        with self.executor.journal.action_lock(self.executor.lock_timeout, self.stop):
            self.guards.refresh()  # under the lock: the alert worker refreshes the same state
            offlined = frozenset(self.guards.state.offlined)
            offline = [
                b.id
                for b in read_blocks(self.paths.memory, ParseErrors())
                if b.state == "offline" and b.id not in offlined
            ]
            interrupted = self._not_applied() if offline else set()
            found = []
            for block in offline:
                occ = self._occurrence(block)
                if not self.guards.already_acted(occ):
                    found.append(block)
                elif (occ.fingerprint, occ.starts_at) in interrupted and block not in self._retry:
                    # kill -9 mid-write, and reconciliation found the write had not taken: the
                    # block was never onlined; once more, under an occurrence of its own.
                    self._retry.add(block)
                    if not self.guards.already_acted(self._occurrence(block)):
                        found.append(block)
        for block in found:
            self.blocks.added(block, None)
        n = len(found)
        log.info("event path: rescan (%s): %d offline block(s) queued", why, n)

    def _not_applied(self) -> set[tuple[str, str]]:
        """Event occurrences whose action a kill interrupted: its write reconciled as not applied, or
        the action itself reconciled (killed before its write began).  The caller retries only
        blocks still offline, so a write that did take is never repeated."""
        out: set[tuple[str, str]] = set()
        for r in self.executor.journal.read_all():
            interrupted = isinstance(r, ReconcileAction) or (
                isinstance(r, Reconcile) and r.outcome == Outcome.NOT_APPLIED
            )
            if interrupted and isinstance(r, Reconcile | ReconcileAction) and r.fingerprint.startswith(PREFIX):
                out.add((r.fingerprint, r.starts_at))
        return out

    def handle_batch(self, due: list[tuple[int, float | None]]) -> None:
        if due:
            log.debug("event path: batch of %d block(s): %s", len(due), [b for b, _ in due])
        for block, at in due:
            if self.stop.is_set():
                return
            result = self.handle(block)
            if result == NOT_READY and self._look_again(block, at):
                continue
            self._not_ready.pop(block, None)
            self.metrics.memory_added_blocks.labels(result).inc()
            if result in (ONLINED, ALREADY_ONLINE) and at is not None:
                self.metrics.memory_added_online_seconds.observe(max(0.0, self.clock() - at))

    def _look_again(self, block: int, at: float | None) -> bool:
        n = self._not_ready.get(block, 0) + 1
        if n > MAX_NOT_READY:
            log.warning("event path: memory%d still not linked to its node after %d looks; left alone", block, n)
            return False
        self._not_ready[block] = n
        self.blocks.later(block, at, NOT_READY_DELAY)
        return True

    # --- one block ----------------------------------------------------------------------------

    def _occurrence(self, block: int) -> Occurrence:
        identity = block_identity(self.paths, self.boot_id, block) or ""
        if identity and block in self._retry:
            identity += ":after-interrupt"
        return Occurrence(f"{PREFIX}memory{block}", identity, False)

    def handle(self, block: int) -> str:
        """Online one added block through the executor; its outcome (a ``memory_added_blocks`` result)."""
        b = read_block(self.paths.memory, block, ParseErrors())
        if b is None:
            return GONE
        if b.state == "online":
            log.info("event path: memory%d already online (another writer won)", block)
            return ALREADY_ONLINE
        if b.state == "offline" and not b.valid_zones:
            # The add uevent goes out before the kernel links the block to its node; until then
            # valid_zones is not read (it would oops the kernel) and the block cannot be planned.
            return NOT_READY
        occ = self._occurrence(block)
        if not occ.starts_at:
            return GONE
        origin = Origin(self.rule.name, occ.fingerprint, occ.starts_at, False, SOURCE, self.rule.cooldown or 0.0)
        out = self.executor.execute(self.request(block), origin)
        result = self._result(block, out)
        log.info("event path: memory%d rule %s: %s %s", block, self.rule.name, result, out.detail)
        return result

    def request(self, block: int) -> Request:
        g = self.cfg.guards
        return Request(
            action=Action.ONLINE,
            blocks=(block,),
            zone=self.rule.zone,
            max_blocks=min(self.rule.max_blocks or g.max_blocks_per_action, g.max_blocks_per_action),
            min_available=g.min_available,
            max_movable_ratio=g.max_movable_ratio,
        )

    def _result(self, block: int, out: ActionOutcome) -> str:
        if out.status == Status.DONE:
            return ONLINED if any(r.result == Result.OK for r in out.results) else ALREADY_ONLINE
        if out.status == Status.DUPLICATE:
            return DUPLICATE
        if out.status == Status.DRY_RUN:
            return DRY_RUN
        if out.status == Status.REFUSED:
            return REFUSED
        # Failed, but online after all: another writer won the race (e.g. a udev rule onlined
        # it to another zone than planned, and our write got EINVAL).  That is success.
        after = read_block(self.paths.memory, block, ParseErrors())
        if after is not None and after.state == "online":
            return ALREADY_ONLINE
        return FAILED
