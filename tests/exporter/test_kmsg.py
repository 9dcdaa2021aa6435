"""Offline failures from kernel log lines, followed like tail -f."""

import os
import time

from memhp.exporter.events.kmsg import FailureCounts, KmsgWatcher, parse_failure
from tests.helpers.wait import wait_until as wait_for

LINE = "memory offlining [mem 0x0000000148000000-0x000000014fffffff] failed due to notifier failure"
KMSG = "7,1234,56789012,-;" + LINE


def test_parse_both_formats():
    f = parse_failure(KMSG)
    assert (f.start, f.end, f.reason) == (0x148000000, 0x14FFFFFFF, "notifier failure")
    assert list(f.blocks(128 << 20)) == [41]
    assert parse_failure("[   12.345] " + LINE.replace("notifier failure", "unmovable page")).reason == "unmovable page"
    assert parse_failure("memory offlining [mem 0x2-0x1] failed due to x") is None
    assert parse_failure("random line") is None


def test_watcher_counts_only_new_lines_by_default(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text(KMSG + "\n")  # already in the buffer at start: not counted
    counts = FailureCounts(block_limit=2)
    w = KmsgWatcher(str(log), counts, lambda: 128 << 20, poll_interval=0.05).start()
    try:
        wait_for(lambda: w.up)
        with open(log, "a") as f:
            f.write(KMSG + "\n" + " SUBSYSTEM=memory\n" + "garbage \xff\n")
            f.write(
                LINE.replace("0x0000000148000000-0x000000014fffffff", "0x0000000150000000-0x000000015fffffff") + "\n"
            )
            f.write(
                LINE.replace("0x0000000148000000-0x000000014fffffff", "0x0000000200000000-0x0000000207ffffff") + "\n"
            )
        wait_for(lambda: sum(counts.snapshot()[0].values()) == 3)
        by_reason, by_block, _ = counts.snapshot()
        assert by_reason == {"notifier failure": 3}
        # blocks 41, 42, 43 and 64: the limit of 2 block series sends the rest to "other"
        assert by_block == {
            ("41", "notifier failure"): 1,
            ("42", "notifier failure"): 1,
            ("other", "notifier failure"): 2,
        }
    finally:
        w.stop()


def test_replay_counts_the_existing_buffer(tmp_path):
    log = tmp_path / "kmsg"
    log.write_text(KMSG + "\n")
    counts = FailureCounts(block_limit=10)
    w = KmsgWatcher(str(log), counts, lambda: 128 << 20, replay=True, poll_interval=0.05).start()
    try:
        wait_for(lambda: counts.snapshot()[0] == {"notifier failure": 1})
    finally:
        w.stop()


def test_unreadable_log_is_down_and_retried(tmp_path):
    counts = FailureCounts(block_limit=10)
    w = KmsgWatcher(str(tmp_path / "missing"), counts, lambda: None, poll_interval=0.05).start()
    try:
        wait_for(lambda: w.restarts >= 1)
        assert not w.up
        (tmp_path / "missing").write_text("")
        wait_for(lambda: w.up, timeout=15)
    finally:
        w.stop()


def test_known_reasons_start_at_zero(tmp_path):
    """A reason's first failure must be an increase from 0, not a new series at 1."""
    from prometheus_client import CollectorRegistry

    from memhp.exporter.collectors import MemhpCollector
    from memhp.exporter.collectors.events import OfflineFailuresCollector
    from memhp.exporter.events.kmsg import KNOWN_REASONS
    from memhp.exporter.kernel.paths import Paths

    counts = FailureCounts(block_limit=10)
    w = KmsgWatcher(str(tmp_path / "kmsg"), counts, lambda: 128 << 20)
    reg = CollectorRegistry(auto_describe=False)
    reg.register(MemhpCollector(Paths(str(tmp_path), str(tmp_path)), [OfflineFailuresCollector(w, counts)]))
    for reason in KNOWN_REASONS:
        assert reg.get_sample_value("memhp_offline_failures_total", {"reason": reason}) == 0
    counts.add(parse_failure(KMSG), 128 << 20, 0.0)
    assert reg.get_sample_value("memhp_offline_failures_total", {"reason": "notifier failure"}) == 1


def _thread_cpu_seconds(native_id: int) -> float:
    """utime + stime of one thread of this process, from /proc (fields 14 and 15)."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_character_device_at_eof_does_not_spin():
    """--path.kmsg /dev/null: select() says readable and read() returns b"" at
    once, forever; the idle watcher burnt 8.3 s of CPU every 10 s."""
    w = KmsgWatcher("/dev/null", FailureCounts(block_limit=2), lambda: 128 << 20, poll_interval=0.5).start()
    try:
        wait_for(lambda: w.up)
        tid = w._thread.native_id
        assert tid is not None
        before = _thread_cpu_seconds(tid)
        time.sleep(2.0)
        spent = _thread_cpu_seconds(tid) - before
        assert w.up and w.restarts == 0
    finally:
        w.stop()
    assert spent < 0.3, f"the watcher used {spent:.2f} s of CPU in 2 s of an empty log"
