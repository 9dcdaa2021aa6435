"""The actuator on fixture trees: real writer children, real files, real timeouts.

Errnos come from real files where a file can produce them (ENOENT, EISDIR,
EACCES as an unprivileged user, EPERM from an immutable file, EROFS from a
read-only bind mount, a FIFO that blocks); only the kernel's own answers
(EBUSY, EAGAIN, EINTR, EINVAL, EHWPOISON) use a writer that raises them.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from msgspec.structs import replace

from memhp.controller.actuator import ActionContext, Actuator, run_writer_child, write_once
from memhp.controller.config import RetryConfig
from memhp.controller.errnos import EHWPOISON, errno_name
from memhp.controller.journal import Journal
from memhp.controller.metrics import ControllerMetrics
from tests.controller.sysfs_tree import errno_writer, kernel_writer

FAST = RetryConfig(
    attempts=3,
    attempt_timeout=0.3,
    kill_grace=0.5,
    total_timeout=60.0,
    backoff_initial=0.01,
    backoff_max=0.05,
    backoff_jitter=0.01,
)
CTX = ActionContext("a1", "rule1", "offline", "fp", "2024-01-01T00:00:00.000Z", "webhook")


def make(tree, tmp_path, retry=FAST, writer=None):
    journal = Journal(str(tmp_path / "journal.jsonl")).open()
    metrics = ControllerMetrics()
    return Actuator(tree.paths, retry, journal, metrics, writer=writer), journal, metrics


def records(journal, type_=None):
    recs = list(journal.read_all())
    return [r for r in recs if type_ is None or r.type == type_]


def attempts_metric(metrics, action, result, err):
    v = metrics.registry.get_sample_value(
        "memhp_controller_attempts_total", {"action": action, "result": result, "errno": err}
    )
    return v or 0.0


def no_children_left() -> bool:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return pid == 0 and not _child_pids()


def _child_pids() -> list[int]:
    me = os.getpid()
    out = []
    for task in os.listdir(f"/proc/{me}/task"):
        try:
            with open(f"/proc/{me}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return out


# --- success and idempotence ---------------------------------------------------------------------


def test_offline_writes_once_and_journals_before_and_after(tree, tmp_path):
    tree.add_block(5, "online", "Movable")
    act, journal, metrics = make(tree, tmp_path, writer=kernel_writer)
    res = act.change(5, "offline", CTX)
    assert (res.result, res.attempts, res.state_before, res.state_after) == ("ok", 1, "online", "offline")
    assert tree.state(5) == "offline"
    kinds = [r.type for r in records(journal)]
    assert kinds == ["attempt_start", "attempt_end", "block_result"]
    start, end, result = records(journal)
    assert start.state_before == "online" and start.block == 5 and start.attempt == 1
    assert start.fingerprint == "fp" and start.action_id == "a1" and start.rule == "rule1"
    assert end.errno == 0 and end.state_after == "offline" and end.duration > 0
    assert attempts_metric(metrics, "offline", "ok", "") == 1


def test_the_default_writer_writes_the_token_in_one_write(tree, tmp_path):
    # A regular file shows exactly what was written, and that it was one write of the bare token.
    tree.add_block(3, "offline", "Movable Normal")
    (tree.block_dir(3) / "state").write_text("")
    out = run_writer_child(str(tree.block_dir(3) / "state"), b"online_movable", 5, 1)
    assert out.errno == 0 and not out.timed_out
    assert (tree.block_dir(3) / "state").read_bytes() == b"online_movable"


def test_block_already_in_state_is_success_without_a_write(tree, tmp_path):
    tree.add_block(5, "offline", "Movable Normal")
    act, journal, _ = make(tree, tmp_path, writer=errno_writer(errno.EPERM))  # would fail if it wrote
    res = act.change(5, "offline", CTX)
    assert res.result == "already" and res.attempts == 0 and res.ok
    assert [r.type for r in records(journal)] == ["block_result"]


def test_einval_with_state_confirmed_is_already_there(tree, tmp_path):
    # Another actor onlined the block between our read and our write: the kernel answers EINVAL.
    tree.add_block(6, "offline", "Movable Normal")

    def racing_writer(path, data):
        with open(path, "w") as f:
            f.write("online\n")
        with open(os.path.join(os.path.dirname(path), "valid_zones"), "w") as f:
            f.write("Movable\n")
        raise OSError(errno.EINVAL, "Invalid argument")

    act, journal, _ = make(tree, tmp_path, writer=racing_writer)
    res = act.change(6, "online_movable", CTX)
    assert res.result == "already" and res.ok and res.attempts == 1
    assert records(journal, "attempt_end")[0].errno_name == "EINVAL"


def test_online_in_the_wrong_zone_is_refused_without_a_write(tree, tmp_path):
    tree.add_block(7, "online", "Normal")
    act, journal, _ = make(tree, tmp_path, writer=kernel_writer)
    res = act.change(7, "online_movable", CTX)
    assert res.result == "failed" and res.errno_name == "EINVAL" and res.attempts == 0
    assert tree.state(7) == "online"


# --- the FIFO: a write that blocks ---------------------------------------------------------------


def test_blocking_write_is_killed_at_the_deadline_and_retried_exactly(tree, tmp_path):
    tree.add_block(9, "online", "Movable")
    tree.make_state_fifo(9)
    act, journal, metrics = make(tree, tmp_path)
    t0 = time.monotonic()
    res = act.change(9, "offline", CTX)
    elapsed = time.monotonic() - t0
    assert res.result == "failed" and res.errno_name == "timeout" and res.attempts == FAST.attempts
    starts, ends = records(journal, "attempt_start"), records(journal, "attempt_end")
    assert [r.attempt for r in starts] == [1, 2, 3] and [r.attempt for r in ends] == [1, 2, 3]
    for e in ends:
        assert e.result == "timeout" and e.timed_out and e.retryable
        # SIGTERM was enough: the child reported EINTR (the kernel's "signal backoff" errno)
        assert e.errno == errno.EINTR and not e.killed
        assert FAST.attempt_timeout <= e.duration < FAST.attempt_timeout + FAST.kill_grace
    assert elapsed < FAST.attempts * (FAST.attempt_timeout + FAST.kill_grace) + 1.0
    assert attempts_metric(metrics, "offline", "timeout", "timeout") == 3
    assert (
        metrics.registry.get_sample_value(
            "memhp_controller_actions_total", {"action": "offline", "result": "failed", "errno": "timeout"}
        )
        == 1
    )
    assert no_children_left()


def test_writer_ignoring_sigterm_gets_sigkill_after_the_grace(tree, tmp_path):
    tree.add_block(9, "online", "Movable")
    tree.make_state_fifo(9)

    def stubborn(path, data):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        write_once(path, data)

    retry = replace(FAST, attempts=1, attempt_timeout=0.2, kill_grace=0.3)
    act, journal, _ = make(tree, tmp_path, retry=retry, writer=stubborn)
    res = act.change(9, "offline", CTX)
    (end,) = records(journal, "attempt_end")
    assert res.errno_name == "timeout" and end.killed and end.errno is None
    assert 0.5 <= end.duration < 1.5
    assert no_children_left()


def test_total_timeout_stops_retries_before_the_budget_is_exceeded(tree, tmp_path):
    tree.add_block(9, "online", "Movable")
    tree.make_state_fifo(9)
    retry = replace(FAST, attempts=50, attempt_timeout=0.2, kill_grace=0.2, total_timeout=1.5)
    act, journal, _ = make(tree, tmp_path, retry=retry)
    t0 = time.monotonic()
    res = act.change(9, "offline", CTX)
    elapsed = time.monotonic() - t0
    assert elapsed <= retry.total_timeout
    assert 2 <= res.attempts < 50
    assert len(records(journal, "attempt_start")) == len(records(journal, "attempt_end")) == res.attempts


# --- errno classification --------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EBUSY, errno.EAGAIN, errno.EINTR])
def test_transient_errnos_are_retried_up_to_the_attempt_budget(tree, tmp_path, code):
    tree.add_block(4, "online", "Movable")
    act, journal, metrics = make(tree, tmp_path, writer=errno_writer(code))
    res = act.change(4, "offline", CTX)
    assert res.result == "failed" and res.errno == code and res.attempts == FAST.attempts
    ends = records(journal, "attempt_end")
    assert len(ends) == FAST.attempts and all(e.retryable and e.errno == code for e in ends)
    assert attempts_metric(metrics, "offline", "failed", errno_name(code)) == FAST.attempts
    assert tree.state(4) == "online"


@pytest.mark.parametrize(
    "code", [errno.EINVAL, errno.EPERM, errno.EACCES, errno.EROFS, errno.ENOENT, EHWPOISON, errno.ENOMEM]
)
def test_permanent_errnos_are_never_retried(tree, tmp_path, code):
    tree.add_block(4, "online", "Movable")
    act, journal, _ = make(tree, tmp_path, writer=errno_writer(code))
    res = act.change(4, "offline", CTX)
    assert res.result == "failed" and res.errno == code and res.attempts == 1
    (end,) = records(journal, "attempt_end")
    assert not end.retryable and end.errno_name == errno_name(code)


def test_missing_state_file_is_enoent_from_a_real_open(tree, tmp_path):
    tree.add_block(4, "online", "Movable")
    (tree.block_dir(4) / "state").unlink()
    act, journal, _ = make(tree, tmp_path)
    res = act.change(4, "offline", CTX)
    assert (res.errno_name, res.attempts) == ("ENOENT", 1)


def test_missing_block_is_enoent_without_a_write(tree, tmp_path):
    act, journal, _ = make(tree, tmp_path)
    res = act.change(77, "offline", CTX)
    assert (res.result, res.errno_name, res.attempts) == ("failed", "ENOENT", 0)


def test_state_that_is_a_directory_is_eisdir_not_retried(tree, tmp_path):
    tree.add_block(4, "online", "Movable")
    (tree.block_dir(4) / "state").unlink()
    (tree.block_dir(4) / "state").mkdir()
    act, _, _ = make(tree, tmp_path)
    res = act.change(4, "offline", CTX)
    assert (res.errno_name, res.attempts) == ("EISDIR", 1)


def test_immutable_state_file_gives_eperm(tree, tmp_path):
    tree.add_block(4, "online", "Movable")
    state = tree.block_dir(4) / "state"
    if subprocess.run(["chattr", "+i", str(state)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i unsupported on this filesystem")
    try:
        act, _, _ = make(tree, tmp_path)
        res = act.change(4, "offline", CTX)
        assert (res.errno_name, res.attempts) == ("EPERM", 1)
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)


_AS_CHILD = """
import json, sys
from memhp.controller.actuator import ActionContext, Actuator
from memhp.controller.config import RetryConfig
from memhp.controller.journal import Journal
from memhp.controller.metrics import ControllerMetrics
from memhp.exporter.kernel.paths import Paths
j = Journal(sys.argv[4]).open()
a = Actuator(Paths(sysfs=sys.argv[2], procfs=sys.argv[3]), RetryConfig(attempts=3, attempt_timeout=2, backoff_initial=0,
             backoff_jitter=0), j, ControllerMetrics())
r = a.change(4, "offline", ActionContext("x", "r", "offline"))
print(json.dumps({"errno_name": r.errno_name, "attempts": r.attempts}))
"""


def _run_actuator_subprocess(tree, tmp_path, preexec=None, wrap=()):
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    jdir = tmp_path / "jdir"
    jdir.mkdir(mode=0o777, exist_ok=True)
    os.chmod(jdir, 0o777)
    p = subprocess.run(
        [
            *wrap,
            sys.executable,
            "-c",
            _AS_CHILD,
            repo,
            str(tree.root / "sys"),
            str(tree.root / "proc"),
            str(jdir / "j.jsonl"),
        ],
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_unprivileged_writer_gets_eacces_from_the_real_file(tree, tmp_path):
    # Root bypasses file modes, so the whole actuator runs as "nobody" in a forked child.
    tree.add_block(4, "online", "Movable")
    for d in [tmp_path, *tmp_path.parents]:
        if str(d) in ("/", "/tmp"):
            break
        os.chmod(d, os.stat(d).st_mode | 0o005)  # let "nobody" traverse to the tree
    jdir = tmp_path / "jdir"
    jdir.mkdir()
    os.chmod(jdir, 0o777)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            act = Actuator(tree.paths, FAST, Journal(str(jdir / "j.jsonl")).open(), ControllerMetrics())
            res = act.change(4, "offline", CTX)
            os.write(w, json.dumps({"errno_name": res.errno_name, "attempts": res.attempts}).encode())
            code = 0
        except BaseException as e:
            os.write(w, json.dumps({"error": repr(e)}).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = json.loads(f.read())
    os.waitpid(pid, 0)
    assert out == {"errno_name": "EACCES", "attempts": 1}
    assert tree.state(4) == "online"


def test_read_only_mount_gives_erofs(tree, tmp_path):
    tree.add_block(4, "online", "Movable")
    mem = str(tree.mem)
    script = f'mount --bind {mem} {mem} && mount -o remount,bind,ro {mem} && exec "$@"'
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", "true"], capture_output=True
    )
    if probe.returncode != 0:
        pytest.skip(f"no mount namespace here: {probe.stderr.decode().strip()}")
    out = _run_actuator_subprocess(
        tree, tmp_path, wrap=("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh")
    )
    assert out == {"errno_name": "EROFS", "attempts": 1}
    assert tree.state(4) == "online"
