"""Links from the report into Grafana's memhp / Node dashboard
(dashboards/memhp-node.json), with its variables set and the reviewed
period as its time range."""

from __future__ import annotations

import urllib.parse

# dashboards/memhp-node.json: its uid and template variables (a test checks they still match)
NODE_DASHBOARD_UID = "memhp-node"
NODE_DASHBOARD_SLUG = "memhp-node"
VAR_INSTANCE = "instance"
VAR_NODE = "node"
ALL = "$__all"  # the node variable's "All" (includeAll)


def check_base(url: str) -> str:
    """The base URL as given (http or https, with a host), without a trailing slash."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"--grafana-url must be an http(s) URL of Grafana, e.g. http://grafana:3000: {url!r}")
    return url.rstrip("/")


def node_url(base: str, instance: str, node: str | None, start: float, end: float) -> str:
    """The node dashboard of one NUMA node (or of every node of a host when
    ``node`` is None) over the reviewed period."""
    query = [
        (f"var-{VAR_INSTANCE}", instance),
        (f"var-{VAR_NODE}", ALL if node is None else node),
        ("from", str(int(start * 1000))),
        ("to", str(int(end * 1000))),
    ]
    return f"{base}/d/{NODE_DASHBOARD_UID}/{NODE_DASHBOARD_SLUG}?{urllib.parse.urlencode(query)}"
