"""Fleet-wide safety (issue 22): budget, gate, staged rollout."""
