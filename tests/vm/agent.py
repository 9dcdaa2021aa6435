"""memhp guest agent: runs inside the QEMU guest (chrooted into the host's
read-only root) and executes requests from the test harness.

Protocol: JSON objects, one per line, over a virtio-serial port.  Every
request has an ``id`` and an ``op``; every response carries the same ``id``.
Requests are served concurrently (one thread each), so a test can read sysfs
while another request is blocked in a slow ``offline`` write.

Ops:
  ping                              -> {}
  run    argv|sh, timeout, input, env, cwd
                                    -> {rc, stdout, stderr, timed_out, seconds}
  read   path                       -> {data} | {errno, error}
  write  path, value                -> {errno, error}   (errno 0 on success)
  spawn  argv|sh, stdout, env, cwd  -> {pid}
  poll   pid                        -> {rc}             (rc null while running)
  kill   pid, sig                   -> {rc}
  listdir path                      -> {entries} | {errno, error}

Standard library only: it runs with the project's own virtualenv Python,
which lives on a 9p share and is slow to import things from under TCG.
"""

import errno as _errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

_T0 = time.monotonic()
_out_lock = threading.Lock()
_children = {}
_children_lock = threading.Lock()


def _send(fd, obj):
    data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
    with _out_lock:
        view = memoryview(data)
        while view:
            try:
                n = os.write(fd, view)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno in (_errno.EAGAIN, _errno.EPIPE, _errno.ENODEV):
                    time.sleep(0.05)  # host side not connected (yet)
                    continue
                raise
            view = view[n:]


def _text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")


def _cmd(req):
    if "argv" in req:
        return list(req["argv"]), False
    return req["sh"], True


def _env(req):
    env = dict(os.environ)
    env.update(req.get("env") or {})
    return env


def op_ping(req):
    return {"uptime": time.monotonic() - _T0}


def op_run(req):
    cmd, shell = _cmd(req)
    t0 = time.monotonic()
    timeout = req.get("timeout")
    inp = req.get("input")
    try:
        p = subprocess.Popen(
            cmd,
            shell=shell,
            env=_env(req),
            cwd=req.get("cwd"),
            stdin=subprocess.PIPE if inp is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as e:
        return {"rc": 127, "stdout": "", "stderr": str(e), "timed_out": False, "seconds": 0.0}
    timed_out = False
    try:
        out, err = p.communicate(inp.encode() if inp is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = p.communicate()
    return {
        "rc": p.returncode,
        "stdout": _text(out),
        "stderr": _text(err),
        "timed_out": timed_out,
        "seconds": time.monotonic() - t0,
    }


def op_read(req):
    try:
        with open(req["path"], "rb") as f:
            return {"data": _text(f.read())}
    except OSError as e:
        return {"errno": e.errno, "error": e.strerror}


def _write_once(path, data):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        return e.errno
    try:
        os.write(fd, data)
    except OSError as e:
        return e.errno
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return 0


def op_write(req):
    """One write(2) of the value, like ``echo value > path``; errno kept.

    With ``timeout``, the write runs in a forked child that is SIGKILLed when
    the timeout expires (the kernel then abandons e.g. an offline that keeps
    retrying, "signal backoff"), so a stuck write never wedges the agent.
    """
    value = req["value"]
    if not value.endswith("\n") and req.get("newline", True):
        value += "\n"
    data = value.encode()
    timeout = req.get("timeout")
    if timeout is None:
        e = _write_once(req["path"], data)
        return {"errno": e, "error": os.strerror(e) if e else "", "timed_out": False}
    pid = os.fork()
    if pid == 0:  # child: only async-signal-safe-ish os calls, then _exit
        os._exit(_write_once(req["path"], data))
    deadline = time.monotonic() + timeout
    delay = 0.001
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    if os.WIFEXITED(status):
        e = os.WEXITSTATUS(status)
    else:
        e = _errno.EINTR
    return {"errno": e, "error": os.strerror(e) if e else "", "timed_out": timed_out}


def op_listdir(req):
    try:
        return {"entries": sorted(os.listdir(req["path"]))}
    except OSError as e:
        return {"errno": e.errno, "error": e.strerror}


def op_spawn(req):
    cmd, shell = _cmd(req)
    out = req.get("stdout") or "/dev/null"
    with open(out, "ab") as f:
        p = subprocess.Popen(
            cmd,
            shell=shell,
            env=_env(req),
            cwd=req.get("cwd"),
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    with _children_lock:
        _children[p.pid] = p
    return {"pid": p.pid}


def op_poll(req):
    with _children_lock:
        p = _children.get(req["pid"])
    if p is None:
        return {"errno": _errno.ESRCH, "error": "unknown pid"}
    return {"rc": p.poll()}


def op_kill(req):
    with _children_lock:
        p = _children.get(req["pid"])
    if p is None:
        return {"errno": _errno.ESRCH, "error": "unknown pid"}
    if p.poll() is None:
        try:
            os.killpg(p.pid, req.get("sig", signal.SIGTERM))
        except OSError:
            pass
        try:
            p.wait(req.get("timeout", 10))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return {"rc": p.returncode}


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def _serve(fd, req):
    rid = req.get("id")
    try:
        fn = OPS[req["op"]]
        resp = fn(req)
    except Exception as e:  # report, never die
        resp = {"exception": f"{type(e).__name__}: {e}"}
    resp["id"] = rid
    _send(fd, resp)


def main():
    port = sys.argv[1]
    fd = os.open(port, os.O_RDWR | os.O_CLOEXEC)
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    hello = {
        "id": None,
        "op": "hello",
        "pid": os.getpid(),
        "uname": " ".join(os.uname()),
        "python": sys.version.split()[0],
        "agent_start": time.monotonic() - _T0,
        "guest_uptime": float(open("/proc/uptime").read().split()[0]),
    }
    _send(fd, hello)
    buf = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except InterruptedError:
            continue
        if not chunk:  # host not connected: virtio-serial reports EOF
            time.sleep(0.05)
            continue
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if not line.strip():
                continue
            try:
                req = json.loads(line)
            except ValueError:
                _send(fd, {"id": None, "exception": "bad json"})
                continue
            if req.get("op") == "hello":
                _send(fd, hello)
                continue
            threading.Thread(target=_serve, args=(fd, req), daemon=True).start()


if __name__ == "__main__":
    main()
