"""``memhp report``: capacity reviews from Prometheus (see docs/capacity-review.md)."""
