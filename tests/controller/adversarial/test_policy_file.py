"""Hostile or broken policy files: a clear file:line:col error (exit 2), never a traceback or a cut."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memhp.controller.config import ConfigError, load_config

BASE = "guards:\n  dry_run: false\n"


def check_config(path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memhp.controller.cli", "check-config", "--config.file", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_oversize_file_is_refused_not_truncated(tmp_path):
    """A 1.1 MiB file ending with `dry_run: true` passed check-config with dry_run=false."""
    p = tmp_path / "big.yaml"
    p.write_text(BASE + "# " + "x" * (1100 << 10) + "\nguards_again: 1\n" + "  dry_run: true\n")
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_config(str(p))
    r = check_config(p)
    assert r.returncode == 2 and "never truncated" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "text,where,what",
    [
        ("guards: !!python/name:os.system\n", ":1:9:", "python/name"),
        ("guards:\n  pause_file: !local x\n", ":2:15:", "!local"),
        ("guards:\n  pause_file: !!binary aGVsbG8=\n", ":2:15:", "binary"),
        ("guards:\n  ? !!timestamp 2001-12-14\n  : 1\n", ":2:5:", "timestamp"),
        ("guards:\n  !!python/object/apply:os.system [echo]: 1\n", ":2:3:", "python/object"),
        ("rules: " + "[" * 200_000 + "]" * 200_000 + "\n", ":1:", "nested deeper"),
    ],
)
def test_yaml_tags_and_deep_nesting_are_clear_errors(tmp_path, text, where, what):
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    r = check_config(p)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and f"{p}{where}" in r.stderr and what in r.stderr


def test_implicit_timestamp_key_is_an_unknown_key_not_a_crash(tmp_path):
    p = tmp_path / "policy.yaml"
    p.write_text("guards:\n  2001-12-14: 1\n")
    r = check_config(p)
    assert r.returncode == 2 and "Traceback" not in r.stderr and f"{p}:2:3" in r.stderr


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("retry.attempt_timeout", ".inf", "must be finite"),
        ("retry.attempt_timeout", "30d", "at most 1h"),
        ("retry.kill_grace", ".nan", "nan"),
        ("retry.total_timeout", "400h", "at most 1d"),
        ("guards.cooldown", "1.0e+308", "at most 7d"),
        ("guards.quarantine.duration", "365d", "at most 30d"),
        ("controller.action_timeout", "99999d", "at most 1d"),
        ("controller.journal_max_size", "10G", "between"),
        ("controller.journal_max_age", "1s", "between"),
        ("controller.queue_size", "10000000", "between"),
    ],
)
def test_out_of_range_values_are_refused_at_load(tmp_path, key, value, msg):
    parts = key.split(".")
    text = ""
    for depth, part in enumerate(parts[:-1]):
        text += "  " * depth + part + ":\n"
    text += "  " * (len(parts) - 1) + f"{parts[-1]}: {value}\n"
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=msg) as err:
        load_config(str(p))
    assert f"{p}:{len(parts)}:" in str(err.value)


def test_a_fifo_is_refused_without_hanging(tmp_path):
    p = tmp_path / "policy.yaml"
    os.mkfifo(p)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(str(p))
