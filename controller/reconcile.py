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
from typing import Any

from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.memory_blocks import read_block
from memhp.exporter.kernel.paths import Paths

from .actuator import OPS, satisfied
from .journal import Journal, unfinished_actions, unfinished_attempts

log = logging.getLogger(__name__)


def reconcile(journal: Journal, paths: Paths, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write one ``reconcile`` record per unfinished attempt; returns them."""
    out = []
    errors = ParseErrors()
    for rec in unfinished_attempts(records):
        block_id, op = rec.get("block"), rec.get("op")
        if not isinstance(block_id, int) or op not in OPS:
            continue
        block = read_block(paths.memory, block_id, errors)
        if block is None:
            outcome = "block_gone"
        elif satisfied(block, op):
            outcome = "completed" if rec.get("state_before") != block.state else "already"
        elif block.state == "going-offline":
            outcome = "in_progress"
        elif block.state in ("online", "offline") and block.state != OPS[op][0]:
            outcome = "not_applied"  # e.g. the offline was abandoned (EINTR) when the writer died
        else:
            outcome = "unknown"
        r = journal.append(
            {
                "type": "reconcile",
                "action_id": rec.get("action_id"),
                "rule": rec.get("rule"),
                "action": rec.get("action"),
                "block": block_id,
                "op": op,
                "attempt": rec.get("attempt"),
                "fingerprint": rec.get("fingerprint", ""),
                "starts_at": rec.get("starts_at", ""),
                "state_before": rec.get("state_before"),
                "state_now": block.state if block else None,
                "zone_now": block.zone if block else None,
                "outcome": outcome,
                "interrupted_at": rec.get("ts"),
            }
        )
        log.warning(
            "reconciled interrupted %s of memory%d (action %s, attempt %s): %s, state now %s",
            op,
            block_id,
            rec.get("action_id"),
            rec.get("attempt"),
            outcome,
            r["state_now"],
        )
        out.append(r)
    for rec in unfinished_actions(records):
        journal.append(
            {
                "type": "reconcile_action",
                "action_id": rec.get("action_id"),
                "rule": rec.get("rule"),
                "action": rec.get("action"),
                "result": "interrupted",
                "fingerprint": rec.get("fingerprint", ""),
                "starts_at": rec.get("starts_at", ""),
            }
        )
    return out
