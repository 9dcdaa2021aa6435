"""Warnings about a policy that loads but may never act: a rule waiting for an alert memhp does not
ship, or for a severity its alert never carries.

Not errors: a site may define its own alerts (then the warning names them, and the operator knows).
The shipped alerts come from ``memhp/alert_catalog.json``, which alerts/generate.py writes beside the
rule files, so the installed controller knows them without alerts/.
"""

from __future__ import annotations

import json
from importlib import resources

from .config import Config, Matcher, Rule

CATALOG = "alert_catalog.json"


def shipped_alerts() -> dict[str, tuple[str, ...]]:
    """Alert name -> the severities memhp's rule files give it."""
    text = resources.files("memhp").joinpath(CATALOG).read_text(encoding="utf-8")
    return {name: tuple(sev) for name, sev in json.loads(text).items()}


def _severity_matchers(rule: Rule) -> list[Matcher]:
    return [m for m in rule.matchers if m.label == "severity"]


def rule_warnings(i: int, rule: Rule, catalog: dict[str, tuple[str, ...]]) -> list[str]:
    alertname = getattr(rule, "alertname", None)
    if alertname is None:  # a rule triggered by a local event, not by an alert
        return []
    where = f"rules[{i}] ({rule.name})"
    if alertname not in catalog:
        return [f"{where}: alertname {alertname!r} is not an alert memhp ships (is it one of your own?)"]
    severities = catalog[alertname]
    out = []
    for m in _severity_matchers(rule):
        if not any(m.matches({"severity": s}) for s in severities):
            out.append(f"{where}: matcher {m} never matches {alertname}, whose severity is {' or '.join(severities)}")
    return out


def warnings(cfg: Config, catalog: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every warning of ``cfg``, in rule order."""
    cat = shipped_alerts() if catalog is None else catalog
    return [w for i, r in enumerate(cfg.rules) for w in rule_warnings(i, r, cat)]
