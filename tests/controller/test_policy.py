"""Planning against fixture snapshots: order, zones, ratio accounting, reserve."""

from __future__ import annotations

import pytest

from memhp.controller.policy import PlanRefused, Request, plan, rebalance_needed
from memhp.exporter.kernel.accounting import Balance
from memhp.exporter.kernel.snapshot import read_snapshot
from tests.controller.sysfs_tree import ZoneSpec
from tests.helpers.controller import standard_layout

MiB = 1 << 20


def snap(tree):
    return read_snapshot(tree.paths)


def test_offline_takes_movable_blocks_highest_address_first(tree):
    standard_layout(tree)  # 0-7 Normal, 8-11 Movable, 12-15 offline
    p = plan(Request("offline", count=3), snap(tree))
    assert p.blocks == [11, 10, 9] and all(s.ops == ("offline",) for s in p.steps)


def test_offline_size_must_be_a_block_multiple(tree):
    standard_layout(tree)
    assert plan(Request("offline", size=256 * MiB), snap(tree)).blocks == [11, 10]
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", size=200 * MiB), snap(tree))
    assert e.value.guard == "size"


def test_offline_never_picks_valid_zones_none(tree):
    standard_layout(tree)
    tree.set_block(11, "online", "none")
    assert plan(Request("offline", count=2, zone="any"), snap(tree)).blocks == [10, 9]
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", blocks=(11,)), snap(tree))
    assert e.value.guard == "valid_zones_none"


def test_offline_kernel_zone_only_when_asked(tree):
    standard_layout(tree, movable=0)
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", count=1), snap(tree))
    assert e.value.guard == "empty_target"
    assert plan(Request("offline", count=1, zone="kernel"), snap(tree)).blocks == [7]


def test_offline_respects_the_memavailable_reserve(tree):
    standard_layout(tree)
    tree.set_meminfo(mem_available=512 * MiB)
    # 512M available, reserve 256M, 128M blocks: two may go
    p = plan(Request("offline", count=3, min_available=256 * MiB), snap(tree))
    assert p.blocks == [11, 10] and any("reserve" in n for n in p.notes)
    tree.set_meminfo(mem_available=300 * MiB)
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", count=1, min_available=256 * MiB), snap(tree))
    assert e.value.guard == "reserve"
    (tree.proc / "meminfo").write_text("MemTotal: 100 kB\n")
    with pytest.raises(PlanRefused, match="MemAvailable unknown"):
        plan(Request("offline", count=1), snap(tree))


def test_offline_of_kernel_memory_keeps_the_ratio(tree):
    # 4 Normal : 8 Movable = 200%; offlining 2 Normal blocks -> 8:2 = 400% > 301%
    standard_layout(tree, normal=4, movable=8, offline=0)
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", blocks=(3, 2), zone="kernel"), snap(tree))
    assert e.value.guard == "ratio"
    assert plan(Request("offline", blocks=(3,), zone="kernel"), snap(tree)).blocks == [3]  # 8:3 = 267%


def test_online_lowest_address_first_and_auto_honours_the_ratio(tree):
    # 2 Normal : 4 Movable online = 200%; ratio 301% -> room for 2 more Movable blocks (6 <= 6.02)
    standard_layout(tree, normal=2, movable=4, offline=4)  # offline: 6-9
    p = plan(Request("online", count=4, zone="auto"), snap(tree))
    assert p.blocks == [6, 7, 8, 9]
    assert [s.ops[0] for s in p.steps] == ["online_movable", "online_movable", "online_kernel", "online_kernel"]
    # after 2 Movable the rest go to Normal: a hot-added block onlined to a kernel zone does not raise the
    # kernel's KERNEL (present_early_pages), so it makes no room for more Movable -- as the real kernel does
    # (tests/vm/test_controller_kernel_paths.py::test_online_auto_honours_auto_movable_ratio)


def test_auto_movable_ratio_zero_means_never_movable(tree):
    # auto_movable_ratio=0: the kernel's auto-movable policy never picks ZONE_MOVABLE; 0 is not "unset"
    standard_layout(tree, normal=2, movable=0, offline=2)
    tree.set_params(ratio=0)
    p = plan(Request("online", count=2, zone="auto"), snap(tree))
    assert [s.ops[0] for s in p.steps] == ["online_kernel", "online_kernel"]
    with pytest.raises(PlanRefused) as e:
        plan(Request("online", count=1, zone="movable"), snap(tree))
    assert e.value.guard == "ratio"


def test_online_movable_above_the_ratio_is_refused(tree):
    standard_layout(tree, normal=2, movable=6, offline=2)
    with pytest.raises(PlanRefused) as e:
        plan(Request("online", count=1, zone="movable"), snap(tree))
    assert e.value.guard == "ratio"
    # an explicit higher ceiling allows it
    assert plan(Request("online", count=1, zone="movable", max_movable_ratio=400), snap(tree)).blocks == [8]


def test_online_zone_must_be_offered_by_valid_zones(tree):
    standard_layout(tree, offline=0)
    tree.add_block(12, "offline", "Normal")  # valid_zones offers no Movable
    tree.add_block(13, "offline", "Movable")
    assert plan(Request("online", count=1, zone="movable"), snap(tree)).blocks == [13]
    assert plan(Request("online", count=1, zone="kernel"), snap(tree)).blocks == [12]
    with pytest.raises(PlanRefused) as e:
        plan(Request("online", blocks=(12,), zone="movable"), snap(tree))
    assert e.value.guard == "request"


def test_numa_aware_ratio_is_checked_per_node(tree):
    # node 0: 4 Normal; node 1: 1 Normal + 3 Movable (300%); system-wide 3:5 is fine, node 1 is not
    for i in range(4):
        tree.add_block(i, "online", "Normal", node=0)
    tree.add_block(4, "online", "Normal", node=1)
    for i in range(5, 8):
        tree.add_block(i, "online", "Movable", node=1)
    tree.add_block(8, "offline", "Movable Normal", node=1)
    ppb = tree.pages_per_block
    tree.set_zoneinfo([ZoneSpec(0, "Normal", 4 * ppb), ZoneSpec(1, "Normal", ppb), ZoneSpec(1, "Movable", 3 * ppb)])
    assert plan(Request("online", count=1), snap(tree)).steps[0].ops == ("online_kernel",)
    tree.set_params(numa_aware=False)
    assert plan(Request("online", count=1), snap(tree)).steps[0].ops == ("online_movable",)


def test_node_selection(tree):
    for i in range(4):
        tree.add_block(i, "online", "Movable", node=i % 2)
    tree.set_zoneinfo([ZoneSpec(0, "Normal", 100 * tree.pages_per_block)])
    assert plan(Request("offline", count=4, node=1), snap(tree)).blocks == [3, 1]
    with pytest.raises(PlanRefused, match="on node 1, not node 0"):
        plan(Request("offline", blocks=(3,), node=0), snap(tree))


def test_online_new_skips_blocks_offlined_deliberately(tree):
    standard_layout(tree)  # offline 12-15
    p = plan(Request("online-new", count=4), snap(tree), offlined_deliberately=frozenset({12, 13}))
    assert p.blocks == [14, 15]
    assert any("deliberately" in n for n in p.notes)


def test_quarantined_blocks_are_skipped_or_refused(tree):
    standard_layout(tree)
    assert plan(Request("offline", count=2), snap(tree), quarantined=frozenset({11})).blocks == [10, 9]
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", blocks=(11,)), snap(tree), quarantined=frozenset({11}))
    assert e.value.guard == "quarantine"


def test_empty_and_unbounded_targets_are_refused(tree):
    standard_layout(tree, offline=0)
    for req in (
        Request("online", count=2),
        Request("online"),
        Request("offline", blocks=()),
        Request("offline", count=0),
    ):
        with pytest.raises(PlanRefused) as e:
            plan(req, snap(tree))
        assert e.value.guard == "empty_target"


def test_per_action_cap(tree):
    standard_layout(tree)
    with pytest.raises(PlanRefused) as e:
        plan(Request("offline", count=3, max_blocks=2), snap(tree))
    assert e.value.guard == "max_blocks_per_action"
    with pytest.raises(PlanRefused):
        plan(Request("online", blocks=(12, 13, 14), max_blocks=2), snap(tree))


def test_rebalance_moves_just_enough_movable_blocks(tree):
    # 2 Normal : 8 Movable = 4:1; to reach 2:1 needs m-n <= 2(k+n): 8-n <= 4+2n -> n >= 4/3 -> 2 blocks
    standard_layout(tree, normal=2, movable=8, offline=0)
    p = plan(Request("rebalance", target_ratio=2.0), snap(tree))
    assert p.blocks == [9, 8] and p.steps[0].ops == ("offline", "online_kernel")
    with pytest.raises(PlanRefused) as e:
        plan(Request("rebalance", target_ratio=5.0), snap(tree))
    assert e.value.guard == "empty_target" and "already" in e.value.detail
    p = plan(Request("rebalance", target_ratio=0.5, max_blocks=3), snap(tree))
    assert len(p.blocks) == 3 and any("capped" in n for n in p.notes)


def test_rebalance_needed_arithmetic():
    assert rebalance_needed(Balance(800, 200), 3.0, 100) == 1  # 700:300 = 2.33
    assert rebalance_needed(Balance(800, 200), 4.0, 100) == 0
    assert rebalance_needed(Balance(0, 0), 1.0, 100) == 0
