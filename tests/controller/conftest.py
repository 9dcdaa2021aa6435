from __future__ import annotations

import textwrap

import pytest
import yaml

from memhp.controller.config import load_config_text
from memhp.controller.engine import Engine
from tests.controller.sysfs_tree import SysTree, ZoneSpec, kernel_writer


@pytest.fixture
def tree(tmp_path):
    return SysTree(tmp_path / "root")


class FakeClock:
    """Wall clock the guards read; tests move it instead of sleeping."""

    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock():
    return FakeClock()


def policy_text(tmp_path, rules: str = "", guards: str = "", retry: str = "", controller: str = "") -> str:
    """A policy file for tests: fast retries, files under tmp_path, overrides merged in."""
    doc = {
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


@pytest.fixture
def make_engine(tree, tmp_path, clock):
    engines = []

    def make(
        rules: str = "",
        guards: str = "",
        retry: str = "",
        controller: str = "",
        writer=kernel_writer,
        dry_run=None,
        start=False,
    ):
        cfg = load_config_text(policy_text(tmp_path, rules, guards, retry, controller), "test-policy.yaml")
        e = Engine(cfg, tree.paths, writer=writer, dry_run=dry_run, clock=clock).open()
        if start:
            e.start()
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.close()


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
