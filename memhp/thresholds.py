"""The alert thresholds (``memhp/thresholds.yaml``) and the runbook base URL: one home.

Read at runtime by ``memhp report`` and by the rule generator
(``python -m alerts.generate``); the dashboards builder reads the same file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

RUNBOOK_BASE = "https://github.com/memhp/memhp/blob/main/docs/runbooks.md"
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


def runbook_url(alertname: str) -> str:
    return f"{RUNBOOK_BASE}#{alertname.lower()}"
