"""Issue 11, secret files: rewrites that keep size and mtime, permissions changed later,
a deleted secret, a FIFO swapped in.  Through a real controller server, and on
SecretFile itself where a clock makes the periodic re-read deterministic."""

from __future__ import annotations

import logging
import os
import threading
import time

from memhp.web.secrets import SecretFile, parse_bearer_token
from tests.helpers.web import TOKEN, payload


def _rewrite_in_place_keeping_mtime(path, text: str) -> None:
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.write(text.encode())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(path).st_size == st.st_size and os.stat(path).st_mtime_ns == st.st_mtime_ns


def test_same_size_rewrite_with_mtime_restored_is_seen(controller):
    c = controller()
    assert c.request(body=payload())[0] == 200
    new = "N" * len(TOKEN)
    _rewrite_in_place_keeping_mtime(c.token_file, new + "\n")
    assert c.request(body=payload(), token=new)[0] == 200
    assert c.request(body=payload(), token=TOKEN)[0] == 401


def test_content_is_compared_even_when_the_stat_says_nothing_changed(tmp_path, monkeypatch):
    """Defence in depth against ctime-blind filesystems: a periodic re-read compares the content."""
    path = tmp_path / "token"
    path.write_text("old-token\n")
    path.chmod(0o600)
    monkeypatch.setattr("memhp.web.secrets._stat_key", lambda st: (0,))  # a stat that never changes
    now = [0.0]
    secret = SecretFile(str(path), parse_bearer_token, recheck=2.0, clock=lambda: now[0])
    _rewrite_in_place_keeping_mtime(path, "new-token\n")
    assert secret.get() == b"old-token"  # within the re-check interval: the cached value
    now[0] = 2.5
    assert secret.get() == b"new-token"


def test_world_readable_warning_is_given_when_it_happens_not_only_at_start(controller, caplog):
    c = controller()
    caplog.set_level(logging.INFO, logger="memhp")
    assert c.request(body=payload())[0] == 200
    assert not [r for r in caplog.records if "readable by every user" in r.getMessage()]
    c.token_file.chmod(0o644)
    for _ in range(5):
        assert c.request(body=payload())[0] == 200
    warnings = [r for r in caplog.records if "readable by every user" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING


def test_a_deleted_secret_logs_once_and_keeps_the_last_one(controller, caplog):
    c = controller()
    caplog.set_level(logging.INFO, logger="memhp")
    c.token_file.unlink()
    for _ in range(10):
        assert c.request(body=payload())[0] == 200
    gone = [r for r in caplog.records if "has gone" in r.getMessage()]
    assert len(gone) == 1
    c.token_file.write_text("back-again-token\n")
    c.token_file.chmod(0o600)
    assert c.request(body=payload(), token="back-again-token")[0] == 200


def test_a_fifo_swapped_in_does_not_hang_requests(controller, caplog, tmp_path):
    c = controller(read_timeout=30)
    caplog.set_level(logging.INFO, logger="memhp")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.replace(fifo, c.token_file)
    for _ in range(3):
        started = time.monotonic()
        status, _, _ = c.request(body=payload(), timeout=10)
        assert status == 200 and time.monotonic() - started < 2  # the last good token stays in force
    errors = [r for r in caplog.records if "not a regular file" in r.getMessage()]
    assert len(errors) == 1
    # Nothing is left waiting on the FIFO: opening it for writing finds no reader.
    try:
        fd = os.open(c.token_file, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        raise AssertionError("a reader still has the FIFO open")
    except OSError as e:
        assert e.errno == 6  # ENXIO: no reader
    assert threading.active_count() < 50
