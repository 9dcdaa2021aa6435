"""Fleet-wide safety (issue 22): a budget of concurrent and hourly actions held
in a coordination service, a Prometheus gate, and a staged rollout.

The decisions are pure functions where they can be (:mod:`.rollout`,
:func:`.gate.verdict`, :func:`.budget.scopes`, :class:`.budget.MemoryStore`)
so the backtest applies exactly the semantics the controller does.
"""
