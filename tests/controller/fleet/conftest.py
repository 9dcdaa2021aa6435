from __future__ import annotations

import pytest
import yaml

from memhp.controller.config import load_config_text
from memhp.controller.engine import Engine
from tests.controller.sysfs_tree import kernel_writer
from tests.helpers.controller import policy_text, standard_layout
from tests.helpers.etcd import new_etcd


@pytest.fixture
def etcd(tmp_path):
    """A real etcd on loopback, stopped at teardown."""
    server = new_etcd(tmp_path / "etcd").start()
    yield server
    server.stop()


@pytest.fixture
def fleet_engine(tree, tmp_path, clock):
    """``make(rules, fleet=..., store=...)``: an engine on the standard layout with a ``fleet:`` section."""
    engines = []

    def make(rules: str, fleet: dict | None = None, store=None, guards: str = "", dry_run=None):
        standard_layout(tree)
        tree.set_meminfo(8 << 30)
        doc = yaml.safe_load(policy_text(tmp_path, rules, guards))
        if fleet is not None:
            doc["fleet"] = fleet
        cfg = load_config_text(yaml.safe_dump(doc), "test-policy.yaml")
        extra = {"fleet_store": store} if store is not None else {}
        e = Engine(cfg, tree.paths, writer=kernel_writer, dry_run=dry_run, clock=clock, **extra).open()
        engines.append(e)
        return e

    yield make
    for e in engines:
        e.close()
