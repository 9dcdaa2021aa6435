"""Start-up reconciliation: finish the story of writes a dead process left open.

An ``attempt_start`` without its ``attempt_end`` means the controller died
between the two (kill -9, OOM, power).  Its writer child died with it
(PR_SET_PDEATHSIG), so the kernel abandoned an offline with EINTR or the
write completed.  The block's real state now tells which; a ``reconcile``
record says so, and an open ``action_start`` gets a ``reconcile_action``.
Run under the journal's action lock, so no live process is mid-action.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.memory_blocks import read_block
from memhp.exporter.kernel.paths import Paths

from .actuator import OPS, satisfied
from .journal import Journal
from .records import ActionStart, AttemptStart, Reconcile, ReconcileAction
from .vocab import Outcome

log = logging.getLogger(__name__)


def reconcile(
    journal: Journal, paths: Paths, attempts: Iterable[AttemptStart], actions: Iterable[ActionStart] = ()
) -> list[Reconcile]:
    """Close every unfinished attempt (one ``reconcile`` record each) and action; returns the former.

    Call under the action lock: then no live process is between an
    ``attempt_start`` and its ``attempt_end``.
    """
    out = []
    errors = ParseErrors()
    for rec in list(attempts):
        block_id, op = rec.block, rec.op
        block = read_block(paths.memory, block_id, errors)
        if block is None:
            outcome = Outcome.BLOCK_GONE
        elif satisfied(block, op):
            outcome = Outcome.COMPLETED if rec.state_before != block.state else Outcome.ALREADY
        elif block.state == "going-offline":
            outcome = Outcome.IN_PROGRESS
        elif block.state in ("online", "offline") and block.state != OPS[op][0]:
            outcome = Outcome.NOT_APPLIED  # e.g. the offline was abandoned (EINTR) when the writer died
        else:
            outcome = Outcome.UNKNOWN
        r = journal.append(
            Reconcile(
                action_id=rec.action_id,
                rule=rec.rule,
                action=rec.action,
                block=block_id,
                op=op,
                attempt=rec.attempt,
                fingerprint=rec.fingerprint,
                starts_at=rec.starts_at,
                resolved=rec.resolved,
                state_before=rec.state_before,
                state_now=block.state if block else None,
                zone_now=block.zone if block else None,
                outcome=outcome,
                interrupted_at=rec.ts,
            )
        )
        assert isinstance(r, Reconcile)
        log.warning(
            "reconciled interrupted %s of memory%d (action %s, attempt %s): %s, state now %s",
            op,
            block_id,
            rec.action_id,
            rec.attempt,
            outcome,
            r.state_now,
        )
        out.append(r)
    for a in list(actions):
        journal.append(
            ReconcileAction(
                action_id=a.action_id,
                rule=a.rule,
                action=a.action,
                fingerprint=a.fingerprint,
                starts_at=a.starts_at,
                resolved=a.resolved,
            )
        )
    return out
