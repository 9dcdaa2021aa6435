"""Fixtures of the controller's tests: a fixture sysfs tree, a clock the guards
read, and engines over that tree (helpers in tests/helpers/controller.py)."""

from __future__ import annotations

import pytest

from memhp.controller.config import load_config_text
from memhp.controller.engine import Engine
from tests.controller.sysfs_tree import SysTree, kernel_writer
from tests.helpers.controller import FakeClock, policy_text


@pytest.fixture
def tree(tmp_path):
    return SysTree(tmp_path / "root")


@pytest.fixture
def clock():
    return FakeClock()


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
