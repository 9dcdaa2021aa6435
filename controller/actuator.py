"""The only code in memhp that writes sysfs: one ``memoryN/state`` write at a time.

For one block change (``change()``):

1. read the block's ``state`` (and ``valid_zones``) through the exporter's
   reader; a block already where it should be is a success without a write
   (the kernel would answer EINVAL);
2. each attempt forks a writer child that does a single ``write()`` of the
   token (``online_movable``, ``offline``, ...) and exits with the errno;
   the parent waits on a pidfd with the per-attempt deadline, then sends
   SIGTERM (the kernel abandons offlining with EINTR, "signal backoff") and
   SIGKILL after a grace period.  The child also dies with the parent
   (PR_SET_PDEATHSIG), so a ``kill -9`` of the controller cannot leave an
   offline running;
3. the state is read again after every attempt; the attempt succeeded iff
   the block is now in the wanted state (an EINVAL with the state confirmed
   is "already there", a success);
4. tenacity bounds the retries: at most ``retry.attempts`` attempts, none
   started unless it can finish (worst case) within ``retry.total_timeout``,
   exponential backoff with jitter; EBUSY, EAGAIN, EINTR and timeouts are
   retried, everything else is final (see :mod:`controller.errnos`);
5. a journal record is fsynced before and after every attempt.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from tenacity.nap import sleep_using_event

from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.memory_blocks import read_block
from memhp.exporter.kernel.model import MOVABLE, MemoryBlock
from memhp.exporter.kernel.paths import Paths
from memhp.exporter.kernel.zones import is_kernel_zone

from .config import RetryConfig
from .errnos import TIMEOUT, errno_name, is_retryable
from .journal import Journal
from .metrics import ControllerMetrics
from .records import AttemptEnd, AttemptStart, BlockResult, clip
from .vocab import Action, AttemptResult, Op, Result

log = logging.getLogger(__name__)

# token written -> (state wanted afterwards, zone kind wanted: None | "movable" | "kernel")
OPS: dict[Op, tuple[str, str | None]] = {
    Op.ONLINE: ("online", None),
    Op.ONLINE_MOVABLE: ("online", "movable"),
    Op.ONLINE_KERNEL: ("online", "kernel"),
    Op.OFFLINE: ("offline", None),
}

Writer = Callable[[str, bytes], None]

_EXIT_SHORT_WRITE = 253
_EXIT_BAD_ERRNO = 254
_EXIT_CRASH = 255
_PR_SET_PDEATHSIG = 1
_prctl: Callable[..., int] | None
try:  # resolved in the parent: no dlopen() after fork
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - non-glibc
    _prctl = None


def write_once(path: str, data: bytes) -> None:
    """The real writer: open, one ``write()``, close; errors raise OSError."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        n = os.write(fd, data)
    finally:
        os.close(fd)
    if n != len(data):
        raise _ShortWrite()


class _ShortWrite(Exception):
    pass


class _Abandon(BaseException):
    pass


def _on_term(signum, frame):
    raise _Abandon()


def _child(path: str, data: bytes, parent: int, writer: Writer) -> None:
    code = _EXIT_CRASH
    try:
        signal.signal(signal.SIGTERM, _on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            code = errno.EINTR
        else:
            writer(path, data)
            code = 0
    except _Abandon:
        code = errno.EINTR
    except _ShortWrite:
        code = _EXIT_SHORT_WRITE
    except OSError as e:
        code = e.errno if e.errno and 0 < e.errno < 250 else _EXIT_BAD_ERRNO
    except BaseException:  # noqa: BLE001 - the forked child must reach os._exit whatever happens
        code = _EXIT_CRASH
    finally:
        os._exit(code)


@dataclass(frozen=True)
class ChildOutcome:
    errno: int | None  # None when the child reported nothing (killed, crashed)
    timed_out: bool
    killed: bool  # needed SIGKILL
    duration: float
    detail: str = ""


# Children that survived SIGKILL plus grace (stuck in an uninterruptible
# sleep); reaped opportunistically so they do not stay zombies.
_unreaped: set[int] = set()
_unreaped_lock = threading.Lock()


def _reap_stragglers() -> None:
    with _unreaped_lock:
        for pid in list(_unreaped):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                _unreaped.discard(pid)


def _wait_exit(pid: int, pidfd: int | None, timeout: float) -> bool:
    """True once ``pid`` has exited (not yet reaped), False at the deadline."""
    if pidfd is not None:
        p = select.poll()
        p.register(pidfd, select.POLLIN)
        return bool(p.poll(max(0, int(timeout * 1000))))  # PEP 475: EINTR resumes with the rest
    deadline = time.monotonic() + timeout
    ev = threading.Event()
    while True:  # no pidfd (kernel < 5.3): poll without reaping
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return True
        except ChildProcessError:
            return True
        if time.monotonic() >= deadline:
            return False
        ev.wait(0.005)


def _signal(pid: int, pidfd: int | None, sig: int) -> None:
    try:
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run_writer_child(path: str, data: bytes, timeout: float, grace: float, writer: Writer = write_once) -> ChildOutcome:
    """Write ``data`` to ``path`` in a child process, bounded by ``timeout`` (+ grace)."""
    _reap_stragglers()
    parent = os.getpid()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        _child(path, data, parent, writer)
    pidfd = None
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        return _supervise(pid, pidfd, t0, timeout, grace)
    except BaseException:
        # Waiting failed (e.g. a timer overflow): the write may have happened; never leave
        # the writer running unobserved.  The caller journals the attempt's outcome.
        _signal(pid, pidfd, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _supervise(pid: int, pidfd: int | None, t0: float, timeout: float, grace: float) -> ChildOutcome:
    timed_out = killed = False
    if not _wait_exit(pid, pidfd, timeout):
        timed_out = True
        _signal(pid, pidfd, signal.SIGTERM)
        if not _wait_exit(pid, pidfd, grace):
            killed = True
            _signal(pid, pidfd, signal.SIGKILL)
            if not _wait_exit(pid, pidfd, grace):
                with _unreaped_lock:
                    _unreaped.add(pid)
                return ChildOutcome(None, True, True, time.monotonic() - t0, "writer survived SIGKILL")
    _, status = os.waitpid(pid, 0)
    duration = time.monotonic() - t0
    if os.WIFSIGNALED(status):
        return ChildOutcome(None, timed_out, killed, duration, f"writer killed by signal {os.WTERMSIG(status)}")
    code = os.WEXITSTATUS(status)
    if code == 0:
        return ChildOutcome(0, timed_out, killed, duration)
    if code == _EXIT_SHORT_WRITE:
        return ChildOutcome(errno.EIO, timed_out, killed, duration, "short write")
    if code in (_EXIT_BAD_ERRNO, _EXIT_CRASH):
        return ChildOutcome(None, timed_out, killed, duration, f"writer exited {code}")
    return ChildOutcome(code, timed_out, killed, duration)


# --- block changes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionContext:
    """Who asked: copied into every journal record of the change."""

    action_id: str
    rule: str
    action: Action  # also the metric label
    fingerprint: str = ""
    starts_at: str = ""
    source: str = ""
    resolved: bool = False

    def of_change(self, block: int, op: Op) -> dict[str, Any]:
        """The fields every record of one block change carries."""
        return {"action_id": self.action_id, "rule": self.rule, "action": self.action, "block": block, "op": op}


@dataclass
class ChangeResult:
    block: int
    op: Op
    result: Result  # ok (changed) | already (nothing to do) | failed
    errno: int | None
    errno_name: str
    attempts: int
    state_before: str | None
    state_after: str | None
    zone_after: str | None
    duration: float
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.result in (Result.OK, Result.ALREADY)

    @property
    def changed(self) -> bool:
        return self.result == Result.OK


def satisfied(block: MemoryBlock | None, op: Op) -> bool:
    """Is ``block`` already where ``op`` would put it?"""
    if block is None:
        return False
    state, zone_kind = OPS[op]
    if block.state != state:
        return False
    if zone_kind == "movable":
        return block.zone == MOVABLE
    if zone_kind == "kernel":
        return is_kernel_zone(block.zone)
    return True


class _AttemptFailed(Exception):
    def __init__(self, result: ChangeResult, retryable: bool) -> None:
        super().__init__(result.errno_name or result.detail)
        self.result = result
        self.retryable = retryable


def _backoff(r: RetryConfig) -> wait_exponential_jitter:
    """backoff_initial * 2**(n-1) + uniform(0, jitter), at most backoff_max."""
    return wait_exponential_jitter(multiplier=r.backoff_initial, max=r.backoff_max, jitter=r.backoff_jitter)


class Actuator:
    def __init__(
        self,
        paths: Paths,
        retry: RetryConfig,
        journal: Journal,
        metrics: ControllerMetrics,
        *,
        writer: Writer | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.paths = paths
        self.retry = retry
        self.journal = journal
        self.metrics = metrics
        self.writer = writer or write_once
        self.stop = stop or threading.Event()
        self.errors = ParseErrors()

    def read(self, block_id: int) -> MemoryBlock | None:
        return read_block(self.paths.memory, block_id, self.errors)

    def _retrying(self) -> Retrying:
        r = self.retry
        worst_attempt = r.attempt_timeout + 2 * r.kill_grace
        return Retrying(
            stop=(
                stop_after_attempt(r.attempts)
                | stop_before_delay(max(0.0, r.total_timeout - worst_attempt))
                | stop_when_event_set(self.stop)
            ),
            wait=_backoff(r),
            retry=retry_if_exception(lambda e: isinstance(e, _AttemptFailed) and e.retryable),
            sleep=sleep_using_event(self.stop),
            reraise=True,
            before_sleep=lambda rs: log.info(
                "block change: attempt %d failed (%s), retrying in %.2fs",
                rs.attempt_number,
                rs.outcome.exception() if rs.outcome else None,
                rs.upcoming_sleep,
            ),
        )

    def change(self, block_id: int, op: Op | str, ctx: ActionContext) -> ChangeResult:
        """Bring ``memory<block_id>`` to ``op``; bounded, retried, journalled."""
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        op = Op(op)
        t0 = time.monotonic()
        first = self.read(block_id)
        if first is None:
            res = ChangeResult(
                block_id, op, Result.FAILED, errno.ENOENT, "ENOENT", 0, None, None, None, 0.0, "no such memory block"
            )
        elif satisfied(first, op):
            res = ChangeResult(block_id, op, Result.ALREADY, None, "", 0, first.state, first.state, first.zone, 0.0)
        elif first.state == OPS[op][0]:
            # Online in the other zone: the kernel would answer EINVAL; moving a block between
            # zones takes an offline first (that is what rebalance does).
            res = ChangeResult(
                block_id,
                op,
                Result.FAILED,
                errno.EINVAL,
                "EINVAL",
                0,
                first.state,
                first.state,
                first.zone,
                0.0,
                f"already {first.state} in zone {first.zone}",
            )
        else:
            counter = [0]
            try:
                res = self._retrying()(self._attempt, block_id, op, ctx, counter)
            except _AttemptFailed as e:
                res = e.result
            res.attempts = counter[0]
            res.state_before = first.state
        res.duration = time.monotonic() - t0
        self.journal.append(
            BlockResult(
                **ctx.of_change(block_id, op),
                result=res.result,
                errno=res.errno,
                errno_name=res.errno_name,
                attempts=res.attempts,
                state_before=res.state_before,
                state_after=res.state_after,
                zone_after=res.zone_after,
                duration=round(res.duration, 6),
                detail=clip(res.detail),
            )
        )
        self.metrics.actions.labels(ctx.action, res.result, res.errno_name).inc()
        self.metrics.action_duration.labels(ctx.action).observe(res.duration)
        if res.ok:
            self.metrics.last_success.set(time.time())
        return res

    def _attempt(self, block_id: int, op: Op, ctx: ActionContext, counter: list[int]) -> ChangeResult:
        counter[0] += 1
        n = counter[0]
        before = self.read(block_id)
        if before is not None and satisfied(before, op):
            # Done meanwhile (e.g. the previous attempt's write completed as it was killed).
            return ChangeResult(block_id, op, Result.ALREADY, None, "", n, before.state, before.state, before.zone, 0.0)
        self.journal.append(
            AttemptStart(
                **ctx.of_change(block_id, op),
                attempt=n,
                fingerprint=ctx.fingerprint,
                starts_at=ctx.starts_at,
                resolved=ctx.resolved,
                source=ctx.source,
                state_before=before.state if before else None,
                zone_before=before.zone if before else None,
            )
        )
        out = self._write(block_id, op)
        after = self.read(block_id)
        state_after = after.state if after else None
        zone_after = after.zone if after else None
        result, retryable = _classify(after, op, out)
        name = _errno_label(result, out)
        detail = out.detail or (
            f"writer reported {errno_name(out.errno)} after SIGTERM" if out.timed_out and out.errno else ""
        )
        self.journal.append(
            AttemptEnd(
                **ctx.of_change(block_id, op),
                attempt=n,
                errno=out.errno,
                errno_name=name,
                result=result,
                retryable=retryable,
                state_after=state_after,
                zone_after=zone_after,
                timed_out=out.timed_out,
                killed=out.killed,
                duration=round(out.duration, 6),
                detail=clip(detail),
            )
        )
        self.metrics.attempts.labels(ctx.action, result, name).inc()
        res = ChangeResult(
            block_id,
            op,
            _CHANGE_RESULT.get(result, Result.FAILED),
            out.errno,
            name,
            n,
            before.state if before else None,
            state_after,
            zone_after,
            out.duration,
            detail,
        )
        if res.ok:
            return res
        raise _AttemptFailed(res, retryable)

    def _write(self, block_id: int, op: Op) -> ChildOutcome:
        """One write of ``op`` to the block's state file, by a writer child."""
        path = os.path.join(self.paths.memory, f"memory{block_id}", "state")
        t0 = time.monotonic()
        try:
            return run_writer_child(path, op.encode(), self.retry.attempt_timeout, self.retry.kill_grace, self.writer)
        except Exception as e:  # the write may have happened: the outcome is still journalled
            log.exception("memory%d: supervising the writer failed", block_id)
            return ChildOutcome(None, False, True, time.monotonic() - t0, f"controller error: {type(e).__name__}: {e}")


_CHANGE_RESULT: dict[AttemptResult, Result] = {AttemptResult.OK: Result.OK, AttemptResult.ALREADY: Result.ALREADY}


def _classify(after: MemoryBlock | None, op: Op, out: ChildOutcome) -> tuple[AttemptResult, bool]:
    """An attempt's result and whether it is worth another attempt."""
    if satisfied(after, op):
        # The block is there now.  Our write did it unless the kernel refused it (an errno other
        # than the EINTR of a writer we signalled): then another actor did.  A writer signalled
        # or killed after its write must count as a change (hourly cap, journal vs. sysfs).
        ours = out.errno in (0, None) or out.timed_out
        return (AttemptResult.OK if ours else AttemptResult.ALREADY), False
    if out.detail.startswith("controller error"):
        return AttemptResult.ERROR, False
    if out.timed_out:
        return AttemptResult.TIMEOUT, True
    if out.errno == 0:
        return AttemptResult.MISMATCH, False  # the write "succeeded" but the block is not there
    return AttemptResult.FAILED, is_retryable(out.errno)


# The errno label of the results that have no errno of their own.
_RESULT_LABEL: dict[AttemptResult, str] = {
    AttemptResult.TIMEOUT: TIMEOUT,
    AttemptResult.MISMATCH: "state_mismatch",
    AttemptResult.ERROR: "controller_error",
    AttemptResult.OK: "",
}


def _errno_label(result: AttemptResult, out: ChildOutcome) -> str:
    if result in _RESULT_LABEL:
        return _RESULT_LABEL[result]
    if result == AttemptResult.ALREADY:
        return errno_name(out.errno)
    return errno_name(out.errno) or "unknown"
