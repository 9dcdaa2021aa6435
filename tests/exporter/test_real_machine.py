"""This machine's real /sys and /proc, read-only: our listing must agree with
util-linux lsmem, and the exposition must be valid."""

import json
import subprocess
import sys

from memhp.cli import main as memhp_main
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.meminfo import read_meminfo
from tests.helpers.tools import require_tool
from tests.helpers.trees import lsmem


def _lsmem_view(doc):
    return [(m["block"], m["state"], m["removable"], m["node"], m["zones"]) for m in json.loads(doc)["memory"]]


def test_blocks_listing_agrees_with_lsmem_on_this_machine(capsys):
    assert memhp_main(["blocks", "-a", "--json"]) == 0
    ours = capsys.readouterr().out
    assert _lsmem_view(ours) == _lsmem_view(lsmem("/"))


def test_merged_listing_agrees_with_lsmem_on_this_machine(capsys):
    assert memhp_main(["blocks", "--json"]) == 0
    ours = json.loads(capsys.readouterr().out)["memory"]
    ref = json.loads(
        subprocess.run(
            ["lsmem", "-J", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )["memory"]
    assert ours == ref  # range, size, and merging too


def test_once_on_this_machine_passes_promtool(tmp_path):
    out = subprocess.run([sys.executable, "-m", "memhp.exporter.cli", "--once"], check=True, capture_output=True)
    assert b"memhp_block_size_bytes" in out.stdout
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=out.stdout, capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_meminfo_matches_proc():
    info = read_meminfo("/proc/meminfo", ParseErrors())
    first = open("/proc/meminfo").readline().split()
    assert first[0] == "MemTotal:" and info["MemTotal"] == int(first[1]) * 1024
