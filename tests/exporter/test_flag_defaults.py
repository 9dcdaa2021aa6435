"""Every default ``memhp-exporter --help`` shows is the value that runs.

The help text comes from a real process; the running values from the
collectors that default arguments build (not --once: the block snapshot, the
kernel-log watcher and the uevent monitor are started) and from the config
the server is given.  Each collector flag is declared once, in its
collector's module (node_exporter's layout); this test keeps the shown and
the running defaults from drifting apart again.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memhp.exporter.cli import build_collectors, config_from_args, get_parser
from memhp.exporter.collectors import REGISTERED, BlocksCollector, OfflineFailuresCollector, UeventsCollector
from memhp.exporter.kernel.fsread import ParseErrors
from memhp.exporter.kernel.paths import Paths
from memhp.units import parse_duration
from tests.helpers.trees import REPO

# "--opt METAVAR" or "--opt, --no-opt" at the start of an entry of the help
_ENTRY = re.compile(r"^  (--\S+?)(?:,| |$)")
_DEFAULT = re.compile(r"\(default:? ([^)]*)\)")


def shown_defaults() -> dict[str, str]:
    """option -> the default its --help entry shows, from a real process."""
    env = {**os.environ, "COLUMNS": "400"}
    out = subprocess.run(
        [sys.executable, "-m", "memhp.exporter.cli", "--help"], check=True, capture_output=True, text=True, env=env
    ).stdout
    entries: dict[str, str] = {}
    option = None
    for line in out.split("options:", 1)[1].splitlines():
        m = _ENTRY.match(line)
        if m:
            option = m.group(1)
            entries[option] = ""
        if option is not None:
            entries[option] += " " + line.strip()
    return {opt: m.group(1) for opt, text in entries.items() if (m := _DEFAULT.search(text))}


def _shown(text: str, running: Any) -> Any:
    """The shown text as a value of the running value's type."""
    if text == "None":
        return None
    if isinstance(running, bool):
        return {"True": True, "False": False}[text]
    if isinstance(running, float):
        return parse_duration(text)  # durations show as one: "5s", "10m"
    return type(running)(text)


@pytest.fixture
def running(tmp_path) -> Iterator[tuple[Any, Any, dict[str, Any]]]:
    """The config and the collectors that default arguments give."""
    args = get_parser().parse_args([])
    cfg = config_from_args(args)
    # Only where to read from changes: the defaults' own /sys and /dev/kmsg are this machine's.
    (tmp_path / "kmsg").write_text("")
    tree = dataclasses.replace(cfg, paths=Paths(str(tmp_path), str(tmp_path), str(tmp_path / "kmsg")))
    collectors = build_collectors(tree, ParseErrors())
    try:
        yield args, cfg, {c.name: c for c in collectors}
    finally:
        for c in collectors:
            c.close()


def _values(args, cfg, built: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """option -> where its value lives once the exporter runs."""
    blocks: BlocksCollector = built["blocks"]
    failures: OfflineFailuresCollector = built["offline_failures"]
    uevents: UeventsCollector = built["uevents"]
    assert blocks.live is not None
    assert failures.counts is blocks.failures  # one FailureCounts, bounded by --collector.blocks.limit
    values: dict[str, Callable[[], Any]] = {
        "--web.listen-address": lambda: cfg.listen,
        "--web.telemetry-path": lambda: cfg.telemetry_path,
        "--web.config.file": lambda: cfg.web_config_file,
        "--web.tls.cert-file": lambda: cfg.tls_cert,
        "--web.tls.key-file": lambda: cfg.tls_key,
        "--web.header-timeout": lambda: cfg.limits.header_timeout,
        "--web.read-timeout": lambda: cfg.limits.read_timeout,
        "--web.max-connections": lambda: cfg.limits.max_connections,
        "--web.max-concurrency": lambda: cfg.limits.max_concurrency,
        "--path.sysfs": lambda: cfg.paths.sysfs,
        "--path.procfs": lambda: cfg.paths.procfs,
        "--path.kmsg": lambda: cfg.paths.kmsg,
        "--collector.blocks.all": lambda: blocks.all_blocks,
        "--collector.blocks.limit": lambda: (blocks.block_limit, failures.counts.block_limit),
        "--collector.blocks.notable-limit": lambda: blocks.notable_limit,
        "--collector.blocks.ranges-limit": lambda: blocks.ranges_limit,
        "--collector.blocks.snapshot": lambda: blocks.live.requested_mode,
        "--collector.blocks.resync-interval": lambda: blocks.live.resync_interval,
        "--collector.blocks.state-interval": lambda: blocks.live.state_interval,
        "--collector.offline_failures.replay": lambda: failures.watcher.replay,
        "--collector.uevents.source": lambda: (uevents.monitor.source, blocks.live.source),
        "--log.level": lambda: args.log_level,
        "--log.format": lambda: args.log_format,
        "--once": lambda: cfg.once,
        "--once.output": lambda: cfg.once_output,
    }
    for name in REGISTERED:
        values[f"--collector.{name}"] = lambda name=name: name in built
    return values


def test_every_default_shown_by_help_is_the_value_that_runs(running):
    args, cfg, built = running
    shown = shown_defaults()
    values = _values(args, cfg, built)
    assert set(shown) == set(values), "a flag shows a default this test does not look up (or lost its default)"
    for option, text in shown.items():
        value = values[option]()
        for one in value if isinstance(value, tuple) else (value,):
            assert _shown(text, one) == one, f"{option}: --help shows {text}, {one!r} runs"


def _same(documented: str, shown: str) -> bool:
    if documented == "off":
        return shown == "False"
    if documented[0].isdigit():
        return parse_duration(documented) == parse_duration(shown.removesuffix("s"))
    return documented == shown


def test_docs_show_the_same_defaults_as_help():
    """The flag table of docs/exporter.md, the reference, says what --help says."""
    doc = (REPO / "docs" / "exporter.md").read_text()
    rows = dict(re.findall(r"^\| `(--[a-z][^` ]*)` \| `?([^`|]*?)`? \|", doc, re.M))
    shown = shown_defaults()
    collector_flags = {f.option for spec in REGISTERED.values() for f in spec.flags}
    assert collector_flags <= set(rows), f"undocumented: {sorted(collector_flags - set(rows))}"
    compared = [o for o in rows if rows[o] and o in shown]
    assert collector_flags <= set(compared)
    for option in compared:
        assert _same(rows[option], shown[option]), f"{option}: docs say {rows[option]}, --help {shown[option]}"
