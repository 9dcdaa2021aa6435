"""The alert thresholds and the runbook base URL (``memhp/thresholds.yaml``): one home.

Read at runtime by ``memhp report`` and by the rule generator
(``python -m alerts.generate``); the dashboards builder reads the same file.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import yaml

THRESHOLDS_RESOURCE = "thresholds.yaml"


def thresholds_path() -> str:
    """Filesystem path of the packaged thresholds file."""
    return str(resources.files("memhp").joinpath(THRESHOLDS_RESOURCE))


def load_thresholds(path: str | None = None) -> dict[str, Any]:
    """The thresholds file at ``path`` (default: the packaged one), parsed."""
    if path is None:
        return _packaged()
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


@cache
def _packaged() -> dict[str, Any]:
    return yaml.safe_load(resources.files("memhp").joinpath(THRESHOLDS_RESOURCE).read_text(encoding="utf-8"))


def runbook_base(thresholds: Mapping[str, Any] | None = None) -> str:
    """``runbooks.base_url`` of ``thresholds`` (default: the packaged file), without a trailing slash.

    A base that is not an absolute http(s) URL, or that already has a fragment,
    would give every alert a link that leads nowhere: refused here, where the
    generators and the report read it.
    """
    t = _packaged() if thresholds is None else thresholds
    section = t.get("runbooks")
    base = section.get("base_url") if isinstance(section, Mapping) else None
    if not isinstance(base, str) or not base.strip():
        raise ValueError("thresholds: runbooks.base_url is missing (the URL of docs/runbooks.md)")
    url = urlsplit(base.strip())
    if url.scheme not in ("http", "https") or not url.netloc or url.fragment or "#" in base:
        raise ValueError(f"thresholds: runbooks.base_url {base!r} is not an http(s) URL without a #fragment")
    return base.strip().rstrip("/")


def runbook_url(alertname: str, base: str | None = None) -> str:
    """The runbook section of ``alertname``: GitHub's anchor of its heading, the name in lower case."""
    return f"{runbook_base() if base is None else base}#{alertname.lower()}"


# The packaged base, for `memhp report`'s default (--runbook-url overrides it).
RUNBOOK_BASE = runbook_base()
