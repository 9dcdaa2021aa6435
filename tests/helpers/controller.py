"""Building blocks for the controller's tests: a policy file, a standard block
layout in a fixture tree (tests/controller/sysfs_tree.py), a clock to move.

The fixtures that use them (``tree``, ``clock``, ``make_engine``) are in
tests/controller/conftest.py."""

from __future__ import annotations

import textwrap

import yaml

from tests.controller.sysfs_tree import SysTree, ZoneSpec


class FakeClock:
    """Wall clock the guards read; tests move it instead of sleeping."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def policy_text(tmp_path, rules: str = "", guards: str = "", retry: str = "", controller: str = "") -> str:
    """A policy file for tests: fast retries, files under tmp_path, overrides merged in."""
    doc: dict[str, dict] = {
        "controller": {"journal": f"{tmp_path}/journal.jsonl"},
        "guards": {"pause_file": f"{tmp_path}/pause", "cooldown": "0s", "min_available": "256M"},
        "retry": {
            "attempts": 3,
            "attempt_timeout": "2s",
            "kill_grace": "500ms",
            "backoff_initial": "10ms",
            "backoff_max": "50ms",
            "backoff_jitter": "10ms",
        },
    }
    doc["controller"].update(yaml.safe_load(textwrap.dedent(controller)) or {})
    doc["guards"].update(yaml.safe_load(textwrap.dedent(guards)) or {})
    doc["retry"].update(yaml.safe_load(textwrap.dedent(retry)) or {})
    if rules:
        doc["rules"] = yaml.safe_load(textwrap.dedent(rules))
    return yaml.safe_dump(doc, sort_keys=False)


def standard_layout(tree: SysTree, normal: int = 8, movable: int = 4, offline: int = 4) -> None:
    """Blocks 0..normal-1 online Normal, then online Movable, then offline (hot-added)."""
    i = 0
    for _ in range(normal):
        tree.add_block(i, "online", "Normal")
        i += 1
    for _ in range(movable):
        tree.add_block(i, "online", "Movable")
        i += 1
    for _ in range(offline):
        tree.add_block(i, "offline", "Movable Normal")
        i += 1
    tree.set_zoneinfo(
        [ZoneSpec(0, "Normal", normal * tree.pages_per_block), ZoneSpec(0, "Movable", movable * tree.pages_per_block)]
    )


def journal(engine, type_=None) -> list:
    """The engine's journal records (of one ``type`` if given)."""
    return [r for r in engine.journal.read_all() if type_ is None or r.type == type_]
