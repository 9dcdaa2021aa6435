"""The conventions every memhp command shares (issue 21 §1), run as real processes.

``memhp``, ``memhp-exporter``, ``memhp-controller`` and ``memhp-relay``, and
their subcommands: ``--version``; ``--log.level``/``--log.format``; durations
on every interval and timeout flag; and no traceback ever, whatever the flags,
missing files and unreadable paths: one line on stderr, status 2 for usage.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
PROGRAMS = ("memhp", "memhp-exporter", "memhp-controller", "memhp-relay")
# Nothing listens on port 9 (discard) of loopback in the test bed; the report never gets that far anyway.
NOWHERE = "http://127.0.0.1:9"

RFC3339_UTC = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
LOGFMT_LINE = re.compile(rf"^time={RFC3339_UTC} level=(debug|info|warn|error) source=\S+:\d+ msg=")


def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    program, *args = argv
    return subprocess.run(
        [str(BIN / program), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "200"},
    )


def not_log_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if not LOGFMT_LINE.match(line)]


def assert_no_traceback(r: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in r.stderr + r.stdout, r.stderr


def assert_one_line_error(r: subprocess.CompletedProcess[str], status: int, needle: str) -> None:
    assert_no_traceback(r)
    assert r.returncode == status, (r.returncode, r.stderr)
    errors = not_log_lines(r.stderr)
    assert len(errors) == 1, r.stderr
    assert needle in errors[0], errors[0]


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
    """A missing path, a directory where a file goes, a file where a directory goes."""
    base = tmp_path_factory.mktemp("cli")
    (base / "adir").mkdir()
    (base / "afile").write_text("x\n")
    proc = base / "proc"
    proc.mkdir()
    (proc / "zoneinfo").mkdir()  # a directory where /proc/zoneinfo should be: EISDIR on read
    (proc / "meminfo").write_text("MemTotal: 1024 kB\nMemFree: 512 kB\nMemAvailable: 512 kB\n")
    return {
        "missing": str(base / "missing" / "x"),
        "adir": str(base / "adir"),
        "afile": str(base / "afile"),
        "under_file": str(base / "afile" / "x"),
        "proc": str(proc),
        "base": str(base),
    }


# --------------------------------------------------------------------------- --version


@pytest.mark.parametrize("program", PROGRAMS)
def test_version_names_version_revision_and_python(program):
    r = run(program, "--version")
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r)
    first, *rest = r.stdout.splitlines()
    assert re.fullmatch(rf"{program}, version \d+\.\d+\.\d+\S* \(revision: ([0-9a-f]{{40}}|unknown)\)", first), first
    python = ".".join(str(v) for v in sys.version_info[:3])
    assert any(line.strip().startswith(f"python version: {python}") for line in rest), r.stdout


# --------------------------------------------------------------------------- bad flags

# (program and arguments, needle of the one error line); every one exits 2
SUBCOMMANDS = {
    "memhp blocks": ("memhp", "blocks"),
    "memhp report": ("memhp", "report", "--prometheus", NOWHERE, "--out", "/nonexistent-memhp-out"),
    "memhp-controller act": ("memhp-controller", "act", "online", "--count", "1", "--dry-run"),
    "memhp-controller check-config": ("memhp-controller", "check-config"),
    "memhp-relay derive-token": ("memhp-relay", "derive-token", "h1", "--target.token-key-file", "/nonexistent"),
}
EVERY_COMMAND = {**{p: (p,) for p in PROGRAMS}, **SUBCOMMANDS}


@pytest.mark.parametrize("name", EVERY_COMMAND)
def test_an_unknown_flag_is_one_line_and_status_2(name):
    r = run(*EVERY_COMMAND[name], "--no-such-flag")
    # bare `memhp` first misses its COMMAND
    assert_one_line_error(r, 2, "COMMAND" if name == "memhp" else "--no-such-flag")


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(("flag", "needle"), [("--log.level=loud", "not a log level"), ("--log.format=xml", "xml")])
def test_a_bad_log_flag_is_one_line_and_status_2(program, flag, needle):
    assert_one_line_error(run(program, flag), 2, needle)


BAD_DURATIONS = [
    ("memhp-exporter", "--web.read-timeout"),
    ("memhp-exporter", "--web.header-timeout"),
    ("memhp-exporter", "--collector.blocks.resync-interval"),
    ("memhp-exporter", "--collector.blocks.state-interval"),
    ("memhp-controller", "--web.read-timeout"),
    ("memhp-controller", "--once.timeout"),
    ("memhp-controller", "--alertmanager.poll-interval"),
    ("memhp-controller", "--alertmanager.timeout"),
    ("memhp-relay", "--target.deadline"),
    ("memhp-relay", "--target.attempt-timeout"),
    ("memhp-relay", "--web.header-timeout"),
]


@pytest.mark.parametrize(("program", "flag"), BAD_DURATIONS)
def test_a_bad_duration_says_what_a_duration_is(program, flag):
    assert_one_line_error(run(program, f"{flag}=soon"), 2, "not a duration: 'soon'")


def test_act_lock_timeout_is_a_duration_too():
    assert_one_line_error(run(*SUBCOMMANDS["memhp-controller act"], "--lock-timeout=soon"), 2, "not a duration")


def test_a_bad_report_duration_is_a_usage_error():
    r = run("memhp", "report", "--prometheus", NOWHERE, "--out", "/nonexistent-memhp-out", "--range", "3 days")
    assert_one_line_error(r, 2, "not a duration")


# --------------------------------------------------------------------------- durations accepted and shown


def test_every_interval_flag_takes_a_duration(paths):
    r = run(
        "memhp-exporter",
        "--once",
        "--collector.blocks.resync-interval=10m",
        "--collector.blocks.state-interval=1m30s",
        "--web.read-timeout=10s",
        "--path.procfs",
        paths["proc"],
    )
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r)


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("memhp-exporter",), {"--collector.blocks.resync-interval": "10m", "--web.read-timeout": "10s"}),
        (("memhp-controller",), {"--once.timeout": "15m", "--alertmanager.poll-interval": "30s"}),
        (("memhp-controller", "act"), {"--lock-timeout": "1m"}),
        (("memhp-relay",), {"--target.deadline": "", "--target.attempt-timeout": "", "--web.header-timeout": "5s"}),
    ],
)
def test_help_shows_durations_not_seconds(argv, shown):
    r = run(*argv, "--help")
    assert r.returncode == 0, r.stderr
    for flag, value in shown.items():
        entry = re.search(rf"^\s+{re.escape(flag)} DURATION\b(.*?)(?=^\s+-|\Z)", r.stdout, re.M | re.S)
        assert entry, (flag, r.stdout)
        default = re.search(r"\(default:? ([^)]*)\)", " ".join(entry.group(1).split()))
        assert default, (flag, entry)
        assert not re.fullmatch(r"[0-9.]+", default.group(1)), (flag, default.group(1))  # "600.0" is what #21 saw
        if value:
            assert default.group(1) == value, (flag, default.group(1))


# --------------------------------------------------------------------------- missing files, unreadable paths

# (arguments, status, needle); "{missing}" etc. are filled from the paths fixture
FILE_CASES = [
    # the reproduction of issue 21: a traceback today
    (("memhp-exporter", "--once", "--once.output", "{missing}"), 2, "--once.output"),
    (("memhp-exporter", "--once", "--once.output", "{adir}"), 2, "Is a directory"),
    (("memhp-exporter", "--web.config.file", "{missing}"), 2, "No such file"),
    (("memhp-exporter", "--web.config.file", "{adir}"), 2, "{adir}"),
    (("memhp-controller", "--config.file", "{missing}"), 2, "No such file"),
    (("memhp-controller", "check-config", "--config.file", "{adir}"), 2, "Is a directory"),
    (("memhp-controller", "act", "online", "--count", "1", "--config.file", "{missing}"), 2, "No such file"),
    (
        ("memhp-controller", "act", "online", "--count", "1", "--dry-run", "--path.sysfs", "{missing}"),
        2,
        "--path.sysfs",
    ),
    (("memhp-controller", "act", "online", "--count", "1", "--dry-run", "--path.sysfs", "{adir}"), 2, "not a sysfs"),
    (
        ("memhp-controller", "act", "online", "--count", "1", "--dry-run", "--journal.path", "{under_file}"),
        2,
        "journal",
    ),
    (
        ("memhp-controller", "--web.listen-address=127.0.0.1:0", "--web.auth.bearer-token-file", "{missing}")
        + ("--journal.path", "{base}/daemon-journal.jsonl"),
        2,
        "No such file",
    ),
    (
        ("memhp-relay", "--web.no-auth", "--web.listen-address=127.0.0.1:0", "--target.allow=.example")
        + ("--target.bearer-token-file", "{missing}"),
        2,
        "No such file",
    ),
    (
        ("memhp-relay", "--web.no-auth", "--web.listen-address=127.0.0.1:0", "--target.allow=.example")
        + ("--target.bearer-token-file", "{adir}"),
        2,
        "not a regular file",
    ),
    (("memhp-relay", "derive-token", "h1", "--target.token-key-file", "{missing}"), 2, "No such file"),
    (("memhp-relay", "derive-token", "h1", "--target.token-key-file", "{adir}"), 2, "not a regular file"),
    (("memhp", "blocks", "--path.sysfs", "{missing}"), 2, "does not exist"),
    (("memhp", "blocks", "--path.sysfs", "{afile}"), 2, "not a directory"),
    (("memhp", "blocks", "--path.sysfs", "{adir}"), 2, "not a sysfs"),
]


@pytest.mark.parametrize(("argv", "status", "needle"), FILE_CASES, ids=lambda v: None)
def test_missing_files_and_unreadable_paths_are_one_line(paths, argv, status, needle):
    r = run(*(a.format(**paths) for a in argv))
    assert_one_line_error(r, status, needle.format(**paths))


def test_an_unreadable_procfs_file_is_logged_and_scraped_without_traceback(paths):
    """``--once`` still writes its answer (status 0): the source's metric says what is wrong."""
    r = run("memhp-exporter", "--once", "--path.procfs", paths["proc"])
    assert r.returncode == 0, r.stderr
    assert_no_traceback(r)
    zoneinfo = paths["proc"] + "/zoneinfo"
    assert f'memhp_source_available{{path="{zoneinfo}",reason="unreadable",source="zoneinfo"}} 0.0' in r.stdout
    assert 'memhp_collector_success{collector="zones"} 0.0' in r.stdout
    errors = [line for line in r.stderr.splitlines() if "level=error" in line]
    assert len(errors) == 1 and "source zoneinfo unavailable (unreadable)" in errors[0], r.stderr


# --------------------------------------------------------------------------- the log format


def test_logfmt_is_the_default_format(paths):
    r = run("memhp-exporter", "--once", "--path.sysfs", paths["missing"], "--path.procfs", paths["proc"])
    lines = r.stderr.splitlines()
    assert lines and all(LOGFMT_LINE.match(line) for line in lines), r.stderr
    assert any(line.split(" ")[1] == "level=error" and 'msg="source sysfs_memory unavailable' in line for line in lines)


def test_json_format_has_the_same_keys(paths):
    r = run(
        "memhp-exporter",
        "--once",
        "--log.format=json",
        "--path.sysfs",
        paths["missing"],
        "--path.procfs",
        paths["proc"],
    )
    records = [json.loads(line) for line in r.stderr.splitlines()]
    assert records, r.stderr
    for rec in records:
        assert list(rec)[:4] == ["time", "level", "source", "msg"], rec
        assert re.fullmatch(RFC3339_UTC, rec["time"]), rec
    assert any(rec["level"] == "error" and "sysfs_memory" in rec["msg"] for rec in records), records


def test_log_level_filters(paths):
    argv = ("memhp-exporter", "--once", "--path.sysfs", paths["missing"], "--path.procfs", paths["proc"])
    assert run(*argv, "--log.level=error").stderr.strip()
    # the older spelling "warning" is still taken for "warn"
    assert run(*argv, "--log.level=warning").returncode == 0
