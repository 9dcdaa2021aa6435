"""The QEMU real-kernel test bed: boot Debian's kernel under TCG and drive it.

    bed = TestBed.prepare(workdir)              # kernel + initramfs + qemu check
    g = bed.boot(VMConfig(numa=(512, 512)))     # a running Guest
    dimm = g.hotplug_dimm("512M", node=1)        # QMP object-add + device_add
    g.wait_for(lambda: all(g.block_state(b) == "offline" for b in g.dimm_blocks(dimm)))
    assert g.write(f"/sys/devices/system/memory/memory{b}/state", "online_movable") == 0
    g.close()

Everything the guest does happens in the guest: this machine's own /sys is
never written (the host root is shared read-only over 9p; the guest mounts its
own proc, sys, dev and debugfs over it inside the chroot).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno as _errno
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers.wait import free_port

from . import initramfs as _initramfs
from .initramfs import AGENT_PORT_NAME, GUEST_RESULTS, HOST_TAG, RESULTS_TAG
from .kernel import Kernel, fetch_kernel

REPO = Path(__file__).resolve().parents[2]
MEMORY = "/sys/devices/system/memory"
NODE = "/sys/devices/system/node"
NOTIFIER_DIR = "/sys/kernel/debug/notifier-error-inject/memory/actions"
DYNDBG = "/sys/kernel/debug/dynamic_debug/control"
QEMU = os.environ.get("MEMHP_QEMU", "qemu-system-x86_64")

MiB = 1 << 20
GiB = 1 << 30


class VMError(RuntimeError):
    """Something in the test bed failed; the message carries the console tail."""


def size_bytes(v: int | str) -> int:
    """``512M``, ``2G``, ``1024`` (MiB if a bare number string), or int bytes."""
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)i?B?\s*", str(v), re.I)
    if not m:
        raise ValueError(f"bad size {v!r}")
    n, unit = int(m.group(1)), m.group(2).upper()
    return n * {"": MiB, "K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}[unit]


def venv_python() -> Path:
    p = REPO / ".venv" / "bin" / "python"
    return p if p.exists() else Path(sys.executable)


@dataclasses.dataclass(frozen=True)
class VirtioMem:
    """A cold-plugged virtio-mem-pci device (resize it with qom-set)."""

    id: str = "vmem0"
    size: str = "2G"  # the backend: the most the device can provide
    node: int = 0
    requested: str = "0"  # requested-size at boot
    block_size: str | None = None


@dataclasses.dataclass(frozen=True)
class VMConfig:
    """A guest configuration; equal configs share one booted guest."""

    memory: str = "1G"  # boot memory (-m)
    slots: int = 4
    maxmem: str = "8G"
    numa: tuple[str | int, ...] = ()  # boot memory per node ("512M", ...); sums to memory
    smp: int | None = None  # default: one CPU per NUMA node (min 1)
    cmdline: tuple[str, ...] = ()  # extra kernel arguments
    virtio_mem: tuple[VirtioMem, ...] = ()
    machine: str = "pc"

    @property
    def cpus(self) -> int:
        return self.smp or max(1, len(self.numa))

    def label(self) -> str:
        parts = [f"m{self.memory}"]
        if self.numa:
            parts.append("numa" + "-".join(str(n) for n in self.numa))
        parts += [c.replace("memory_hotplug.", "mh.") for c in self.cmdline]
        parts += [f"{v.id}:{v.size}" for v in self.virtio_mem]
        return " ".join(parts)


@dataclasses.dataclass
class Result:
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out

    def check(self, what: str = "command") -> Result:
        if not self.ok:
            raise VMError(
                f"{what} failed rc={self.rc} timed_out={self.timed_out}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}"
            )
        return self


def _die_with_parent():
    """In the QEMU child: SIGKILL it if the test process dies (no orphans)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class TestBed:
    """Kernel + initramfs + qemu binary, ready to boot guests."""

    __test__ = False  # not a pytest class

    def __init__(self, kernel: Kernel, initrd: Path, workdir: Path, qemu: str):
        self.kernel, self.initrd, self.workdir, self.qemu = kernel, initrd, workdir, qemu
        self.qemu_version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        self.timings: dict[str, float] = {}
        self._n = itertools.count()

    @classmethod
    def prepare(cls, workdir: Path, log=print) -> TestBed:
        qemu = shutil.which(QEMU)
        if not qemu:
            raise VMError(f"{QEMU} not found: install Debian's qemu-system-x86 (scripts/setup.sh / make test does)")
        t0 = time.monotonic()
        kernel = fetch_kernel(log=log)
        t1 = time.monotonic()
        workdir.mkdir(parents=True, exist_ok=True)
        # Byte-compile the project on the host: the guest's root is read-only
        # and compiling under TCG is slow.
        subprocess.run(
            [
                str(venv_python()),
                "-m",
                "compileall",
                "-q",
                "-j0",
                *(str(REPO / d) for d in ("exporter", "controller", "tests/vm") if (REPO / d).is_dir()),
            ],
            capture_output=True,
        )
        initrd = _initramfs.build_initramfs(kernel, REPO, venv_python(), workdir / "initramfs.cpio")
        bed = cls(kernel, initrd, workdir, qemu)
        bed.timings.update(kernel_fetch=t1 - t0, initramfs=time.monotonic() - t1)
        return bed

    def boot(self, config: VMConfig = VMConfig(), timeout: float | None = None) -> Guest:
        d = self.workdir / f"guest{next(self._n)}"
        g = Guest(self, config, d)
        g.start(timeout=timeout)
        return g


class _Agent:
    """Host end of the JSON-lines channel to tests/vm/agent.py."""

    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self._ids = itertools.count(1)
        self._pending: dict[int, list] = {}
        self._lock = threading.Lock()
        self.hello: dict | None = None
        self.hello_event = threading.Event()
        self.closed = False
        self._wlock = threading.Lock()
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        continue
                    if msg.get("op") == "hello":
                        self.hello = msg
                        self.hello_event.set()
                        continue
                    with self._lock:
                        slot = self._pending.get(msg.get("id"))
                    if slot:
                        slot[1] = msg
                        slot[0].set()
        except OSError:
            pass
        self.closed = True
        with self._lock:
            for slot in self._pending.values():
                slot[0].set()

    def send(self, obj: dict):
        with self._wlock:
            self.sock.sendall((json.dumps(obj) + "\n").encode())

    def call(self, op: str, wait_s: float, alive: Callable[[], bool], **kw) -> dict:
        rid = next(self._ids)
        slot = [threading.Event(), None]
        with self._lock:
            self._pending[rid] = slot
        try:
            self.send({"id": rid, "op": op, **kw})
            deadline = time.monotonic() + wait_s
            while not slot[0].wait(0.2):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"guest agent: no answer to {op} in {wait_s:.0f}s")
                if not alive():
                    raise VMError("QEMU exited while waiting for the guest agent")
            if slot[1] is None:
                raise VMError("guest agent channel closed")
            if "exception" in slot[1]:
                raise VMError(f"guest agent: {slot[1]['exception']}")
            return slot[1]
        finally:
            with self._lock:
                self._pending.pop(rid, None)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Guest:
    """A booted QEMU guest running Debian's kernel and the memhp agent."""

    def __init__(self, bed: TestBed, config: VMConfig, workdir: Path):
        self.bed, self.config, self.workdir = bed, config, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.results = workdir / "results"  # host side of GUEST_RESULTS
        self.results.mkdir(exist_ok=True)
        self.console_path = workdir / "console.log"
        # unix socket paths are limited to 108 bytes: keep them short
        self._sockdir = Path(tempfile.mkdtemp(prefix="memhp-vm-"))
        self.qmp_path = self._sockdir / "qmp.sock"
        self.agent_path = self._sockdir / "agent.sock"
        self.proc: subprocess.Popen | None = None
        self._qmp = None
        self._agent: _Agent | None = None
        self._dimms: dict[str, int] = {}
        self._dimm_ids = itertools.count()
        self._forwards: dict[int, int] = {}
        self._events: list[dict] = []
        self.accel = None
        self.timings: dict[str, float] = {}
        self.hello: dict = {}
        self.block_size = 0
        self.last_write_timed_out = False

    # ------------------------------------------------------------------ boot
    def qemu_argv(self, accel: str) -> list[str]:
        c = self.config
        mem = size_bytes(c.memory)
        argv = [
            self.bed.qemu,
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            c.machine,
            "-accel",
            accel,
            "-m",
            f"{mem // MiB}M,slots={c.slots},maxmem={size_bytes(c.maxmem) // MiB}M",
            "-smp",
            str(c.cpus),
            "-kernel",
            str(self.bed.kernel.vmlinuz),
            "-initrd",
            str(self.bed.initrd),
            "-append",
            " ".join(["console=ttyS0", "panic=-1", "printk.devkmsg=on", *c.cmdline]),
            "-no-reboot",
            "-chardev",
            f"file,id=con,path={self.console_path}",
            "-serial",
            "chardev:con",
            "-qmp",
            f"unix:{self.qmp_path},server=on,wait=off",
            "-virtfs",
            f"local,path=/,mount_tag={HOST_TAG},security_model=none,readonly=on,multidevs=remap",
            "-virtfs",
            f"local,path={self.results},mount_tag={RESULTS_TAG},security_model=none,multidevs=remap",
            "-device",
            "virtio-serial-pci,id=vser0",
            "-chardev",
            f"socket,id=agent,path={self.agent_path},server=on,wait=off",
            "-device",
            f"virtserialport,chardev=agent,name={AGENT_PORT_NAME}",
            "-netdev",
            "user,id=net0,ipv6=off",
            "-device",
            "virtio-net-pci,netdev=net0",
        ]
        if c.numa:
            sizes = [size_bytes(n) for n in c.numa]
            if sum(sizes) != mem:
                raise ValueError(f"numa sizes {c.numa} do not add up to {c.memory}")
            cpus = c.cpus
            for i, s in enumerate(sizes):
                argv += ["-object", f"memory-backend-ram,id=ram-node{i},size={s // MiB}M"]
                node = f"node,nodeid={i},memdev=ram-node{i}"
                mine = [x for x in range(cpus) if x % len(sizes) == i]
                if mine:
                    node += f",cpus={mine[0]}-{mine[-1]}" if len(mine) > 1 else f",cpus={mine[0]}"
                argv += ["-numa", node]
        for v in c.virtio_mem:
            argv += ["-object", f"memory-backend-ram,id={v.id}-mem,size={size_bytes(v.size) // MiB}M"]
            dev = (
                f"virtio-mem-pci,id={v.id},memdev={v.id}-mem,node={v.node},"
                f"requested-size={size_bytes(v.requested) // MiB}M"
            )
            if v.block_size:
                dev += f",block-size={size_bytes(v.block_size) // MiB}M"
            argv += ["-device", dev]
        return argv

    def _accels(self) -> list[str]:
        want = os.environ.get("MEMHP_VM_ACCEL", "tcg")
        if want == "auto":
            return ["kvm", "tcg"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else ["tcg"]
        return [want]

    def start(self, timeout: float | None = None):
        accels = self._accels()
        for i, accel in enumerate(accels):
            last = i == len(accels) - 1
            # A KVM guest on these machines hangs before the kernel prints
            # anything: give it a short probe, then fall back to TCG.
            t = timeout or (float(os.environ.get("MEMHP_VM_BOOT_TIMEOUT", "180")) if accel == "tcg" else 20.0)
            try:
                self._launch(accel, t)
                return
            except (VMError, TimeoutError) as e:
                self.close()
                if last:
                    raise VMError(
                        f"guest did not boot with -accel {accel}: {e}\n--- console tail ---\n{self.console_tail()}"
                    ) from None

    def _launch(self, accel: str, timeout: float):
        self._sockdir.mkdir(parents=True, exist_ok=True)
        if self.console_path.exists() and self.console_path.stat().st_size:
            # keep the log of a failed attempt (e.g. the KVM probe)
            self.console_path.rename(self.workdir / f"console-{self.accel}.log")
        for p in (self.qmp_path, self.agent_path):
            p.unlink(missing_ok=True)
        self.console_path.write_bytes(b"")
        argv = self.qemu_argv(accel)
        (self.workdir / "qemu.argv").write_text(shlex.join(argv) + "\n")
        t0 = time.monotonic()
        self._stderr = open(self.workdir / "qemu.stderr", "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stderr,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        self.accel = accel
        deadline = t0 + timeout
        while not (self.qmp_path.exists() and self.agent_path.exists()):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError("QEMU did not create its sockets")
            time.sleep(0.02)
        from qemu.qmp.legacy import QEMUMonitorProtocol

        self._qmp = QEMUMonitorProtocol(str(self.qmp_path))
        self._qmp.connect(negotiate=True)
        self._qmp.settimeout(60)
        self._agent = _Agent(self.agent_path)
        # ask again now and then, in case the agent's first hello was written
        # before we were connected
        while not self._agent.hello_event.wait(1.0):
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no hello from the guest agent within {timeout:.0f}s")
            try:
                self._agent.send({"op": "hello"})
            except OSError:
                pass
        self.hello = self._agent.hello
        t_hello = time.monotonic() - t0
        self.timings["boot_to_agent"] = t_hello
        self.timings["guest_uptime_at_agent"] = self.hello.get("guest_uptime", 0.0)
        m = re.findall(r"memhp-init: init started \(uptime ([\d.]+)\)", self.console_log())
        if m:
            self.timings["guest_uptime_at_init"] = float(m[-1])
        self.block_size = int(self.read(f"{MEMORY}/block_size_bytes"), 16)

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self):
        if not self._alive():
            rc = self.proc.returncode if self.proc else None
            err = (self.workdir / "qemu.stderr").read_text(errors="replace")[-3000:]
            raise VMError(f"QEMU exited (rc {rc}): {err}")

    def close(self):
        """Stop QEMU (QMP quit, then SIGKILL) and drop the sockets."""
        if self._agent:
            self._agent.close()
            self._agent = None
        if self._qmp is not None:
            try:
                if self._alive():
                    self._qmp.settimeout(5)
                    self._qmp.cmd("quit")
            except Exception:
                pass
            try:
                self._qmp.close()
            except Exception:
                pass
            self._qmp = None
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_stderr", None):
            self._stderr.close()
        shutil.rmtree(self._sockdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ logs
    def console_log(self) -> str:
        """Everything the guest printed on its serial console so far."""
        try:
            return self.console_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def console_tail(self, n: int = 60) -> str:
        return "\n".join(self.console_log().splitlines()[-n:])

    def kmsg(self) -> str:
        """The guest kernel log (all levels, including pr_debug once enabled)."""
        return self.run(["dmesg"], timeout=60).check("dmesg").stdout

    # ------------------------------------------------------------ agent
    def _call(self, op: str, wait_s: float = 60, **kw) -> dict:
        if self._agent is None:
            raise VMError("guest is not running")
        try:
            return self._agent.call(op, wait_s, self._alive, **kw)
        except (VMError, TimeoutError) as e:
            raise type(e)(f"{e}\n--- console tail ---\n{self.console_tail(30)}") from None

    def run(
        self,
        cmd: str | list[str],
        timeout: float = 60,
        input: str | None = None,
        env: dict | None = None,
        cwd: str | None = None,
    ) -> Result:
        """Run ``cmd`` in the guest (a list: argv; a string: ``sh -c``)."""
        req: dict[str, Any] = {"argv": cmd} if isinstance(cmd, list) else {"sh": cmd}
        if self._agent is None:
            raise VMError("guest is not running")
        try:
            r = self._agent.call(
                "run", timeout + 30, self._alive, timeout=timeout, input=input, env=env, cwd=cwd, **req
            )
        except (VMError, TimeoutError) as e:
            raise type(e)(f"{e}\n--- console tail ---\n{self.console_tail(30)}") from None
        return Result(r["rc"], r["stdout"], r["stderr"], r["timed_out"], r["seconds"])

    def python(self, args: list[str] | str, timeout: float = 120, **kw) -> Result:
        """Run the project's virtualenv Python in the guest (cwd: the repo)."""
        if isinstance(args, str):
            args = shlex.split(args)
        return self.run([str(venv_python()), *args], timeout=timeout, cwd=kw.pop("cwd", str(REPO)), **kw)

    def read(self, path: str) -> str:
        """Contents of a guest file; raises OSError (with errno) on failure."""
        r = self._call("read", path=path)
        if "errno" in r:
            raise OSError(r["errno"], r["error"], path)
        return r["data"]

    def try_read(self, path: str, default: str | None = None) -> str | None:
        try:
            return self.read(path)
        except OSError:
            return default

    def write(self, path: str, value: str, timeout: float | None = 60) -> int:
        """One write(2) of ``value`` (newline added) to a guest file.

        Returns 0 on success or the errno (e.g. ``errno.EBUSY``): the kernel's
        answer, not an exception.  The write runs in a child process that is
        SIGKILLed after ``timeout`` seconds (then the result is usually EINTR
        and ``self.last_write_timed_out`` is True); ``timeout=None`` writes
        from the agent itself (cheaper, but must not block).
        """
        r = self._call("write", wait_s=(timeout or 30) + 30, path=path, value=str(value), timeout=timeout)
        self.last_write_timed_out = r.get("timed_out", False)
        return r["errno"]

    def listdir(self, path: str) -> list[str]:
        r = self._call("listdir", path=path)
        if "errno" in r:
            raise OSError(r["errno"], r["error"], path)
        return r["entries"]

    def spawn(
        self, cmd: str | list[str], log: str | None = None, env: dict | None = None, cwd: str | None = None
    ) -> int:
        """Start a background process in the guest; returns its pid.

        Its output goes to ``log`` (a guest path; default: a file in the
        results share, readable on the host as ``self.results / name``).
        """
        req: dict[str, Any] = {"argv": cmd} if isinstance(cmd, list) else {"sh": cmd}
        return self._call("spawn", stdout=log, env=env, cwd=cwd, **req)["pid"]

    def poll(self, pid: int) -> int | None:
        return self._call("poll", pid=pid)["rc"]

    def kill(self, pid: int, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        return self._call("kill", wait_s=timeout + 30, pid=pid, sig=int(sig), timeout=timeout).get("rc")

    # ------------------------------------------------------------ waiting
    def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 60, what: str = "condition", interval: float = 0.05
    ) -> Any:
        """Poll ``predicate`` until it returns something truthy (returned);
        raise TimeoutError after ``timeout`` seconds.  Never a fixed sleep."""
        deadline = time.monotonic() + timeout
        last_exc = None
        while True:
            try:
                v = predicate()
                if v:
                    return v
            except (OSError, ValueError, KeyError) as e:
                last_exc = e
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"timed out after {timeout}s waiting for {what}"
                    + (f" (last error: {last_exc})" if last_exc else "")
                    + f"\n--- console tail ---\n{self.console_tail(20)}"
                )
            self._check_alive()
            time.sleep(interval)

    # ------------------------------------------------------------ memory view
    def blocks(self) -> list[int]:
        """Memory block numbers currently present in the guest."""
        return sorted(int(e[6:]) for e in self.listdir(MEMORY) if re.fullmatch(r"memory\d+", e))

    def block_state(self, n: int) -> str | None:
        v = self.try_read(f"{MEMORY}/memory{n}/state")
        return v.strip() if v is not None else None

    def valid_zones(self, n: int) -> str | None:
        v = self.try_read(f"{MEMORY}/memory{n}/valid_zones")
        return v.strip() if v is not None else None

    def block_info(self) -> dict[int, dict]:
        """{block: {state, valid_zones, node}} in one guest round trip."""
        script = (
            "import os,re,json\n"
            f"M='{MEMORY}'\n"
            "out={}\n"
            "for e in os.listdir(M):\n"
            "  if not re.fullmatch(r'memory\\d+',e): continue\n"
            "  d=M+'/'+e; r={}\n"
            "  try:\n"
            "    for a in ('state','valid_zones'): r[a]=open(d+'/'+a).read().strip()\n"
            "    r['node']=next((int(x[4:]) for x in os.listdir(d) if re.fullmatch(r'node\\d+',x)),None)\n"
            "  except OSError: continue\n"
            "  out[int(e[6:])]=r\n"
            "print(json.dumps(out))\n"
        )
        r = self.python(["-c", script], timeout=60).check("block_info")
        return {int(k): v for k, v in json.loads(r.stdout).items()}

    def set_state(self, n: int, state: str, timeout: float = 60) -> int:
        """Write ``state`` (online, online_movable, online_kernel, offline) to
        memory block ``n``; returns 0 or the errno."""
        return self.write(f"{MEMORY}/memory{n}/state", state, timeout=timeout)

    # ------------------------------------------------------------ QMP
    def qmp(self, command: str, **args) -> Any:
        """Execute a QMP command; returns its ``return`` value (raises on error)."""
        if self._qmp is None:
            raise VMError("QMP not connected")
        return self._qmp.cmd(command, **args)

    def hmp(self, command_line: str) -> str:
        return self.qmp("human-monitor-command", **{"command-line": command_line})

    def events(self, wait: float = 0.0) -> list[dict]:
        """Drain QMP events seen so far into ``self._events`` and return them all."""
        if self._qmp is not None:
            self._events.extend(self._qmp.get_events(wait=float(wait) if wait else False))
        return self._events

    def _wait_event(
        self, name: str, match: Callable[[dict], bool], timeout: float, fail: Callable[[dict], str | None] | None = None
    ) -> dict:
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            evs = self.events()
            for ev in evs[seen:]:
                if ev.get("event") == name and match(ev.get("data", {})):
                    return ev
                if fail:
                    why = fail(ev)
                    if why:
                        raise VMError(why)
            seen = len(evs)
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {name} event within {timeout}s; events: {evs[-10:]}\n"
                    f"--- console tail ---\n{self.console_tail(20)}"
                )
            self._check_alive()
            try:
                self._events.extend(self._qmp.get_events(wait=0.2))
            except Exception:  # asyncio.TimeoutError: nothing arrived
                pass

    def _blocks_for_range(self, addr: int, size: int) -> list[int]:
        return list(range(addr // self.block_size, (addr + size) // self.block_size))

    def hotplug_dimm(
        self,
        size: int | str = "512M",
        node: int | None = None,
        id: str | None = None,
        wait: bool = True,
        timeout: float = 120,
    ) -> str:
        """ACPI-hot-add a pc-dimm (``object-add memory-backend-ram`` +
        ``device_add pc-dimm``); waits until all its blocks exist in the guest.
        Returns the device id."""
        nbytes = size_bytes(size)
        id = id or f"dimm{next(self._dimm_ids)}"
        self.qmp("object-add", **{"qom-type": "memory-backend-ram", "id": f"{id}-mem", "size": nbytes})
        dev: dict[str, Any] = {"driver": "pc-dimm", "id": id, "memdev": f"{id}-mem"}
        if node is not None:
            dev["node"] = node
        try:
            self.qmp("device_add", **dev)
        except Exception:
            self.qmp("object-del", id=f"{id}-mem")
            raise
        addr = self.qmp("qom-get", path=f"/machine/peripheral/{id}", property="addr")
        self._dimms[id] = addr
        if wait:
            want = set(self.dimm_blocks(id))
            self.wait_for(lambda: want <= set(self.blocks()), timeout, f"blocks {sorted(want)} of {id} to appear")
            self.wait_linked(want, timeout)
        return id

    def wait_linked(self, blocks, timeout: float = 120) -> None:
        """Wait until the blocks are linked to their node: the end of a hot-add.
        Before that the kernel has not set their node, and reading their
        valid_zones oopses (NODE_DATA(-1) in zone_for_pfn_range, Debian 6.1)."""
        self.wait_for(
            lambda: all(any(e.startswith("node") for e in self.listdir(f"{MEMORY}/memory{b}")) for b in blocks),
            timeout,
            f"blocks {sorted(blocks)} to be linked to their node",
        )

    def dimm_blocks(self, id: str) -> list[int]:
        """Memory block numbers backed by DIMM ``id``."""
        addr = self._dimms.get(id)
        if addr is None:
            addr = self.qmp("qom-get", path=f"/machine/peripheral/{id}", property="addr")
        size = self.qmp("qom-get", path=f"/machine/peripheral/{id}", property="size")
        return self._blocks_for_range(addr, size)

    def unplug(self, id: str, timeout: float = 120, wait_blocks: bool = True):
        """ACPI removal: ``device_del``, wait for DEVICE_DELETED (the guest
        offlined and ejected it), drop the backend, wait for the blocks to
        vanish from the guest's sysfs."""
        blocks = self.dimm_blocks(id)
        self.events()
        start = len(self._events)
        self.qmp("device_del", id=id)

        def ost_failed(ev):
            info = ev.get("data", {}).get("info", {})
            if (
                ev.get("event") == "ACPI_DEVICE_OST"
                and info.get("device") == id
                and info.get("status") not in (0, 0x84)
            ):
                return f"guest refused to eject {id}: _OST {info}"
            return None

        del self._events[:start]
        self._wait_event("DEVICE_DELETED", lambda d: d.get("device") == id, timeout, fail=ost_failed)
        self.qmp("object-del", id=f"{id}-mem")
        self._dimms.pop(id, None)
        if wait_blocks:
            self.wait_for(lambda: not (set(blocks) & set(self.blocks())), timeout, f"blocks {blocks} of {id} to vanish")

    def virtio_mem_resize(self, id: str, requested: int | str, wait: bool = True, timeout: float = 300) -> int:
        """``qom-set requested-size``; waits until the device reports that
        ``size`` (plugged) equals the request.  Returns the plugged size."""
        want = size_bytes(requested)
        path = f"/machine/peripheral/{id}"
        self.qmp("qom-set", path=path, property="requested-size", value=want)
        if not wait:
            return self.qmp("qom-get", path=path, property="size")
        self.wait_for(
            lambda: self.qmp("qom-get", path=path, property="size") == want,
            timeout,
            f"{id} to plug {want} bytes",
            interval=0.2,
        )
        return want

    # ------------------------------------------------------------ network
    def forward(self, guest_port: int) -> int:
        """Forward a host loopback port to ``guest_port``; returns the host port."""
        if guest_port in self._forwards:
            return self._forwards[guest_port]
        for _ in range(5):
            port = free_port()
            out = self.hmp(f"hostfwd_add net0 tcp:127.0.0.1:{port}-:{guest_port}")
            if not out.strip():
                self._forwards[guest_port] = port
                return port
        raise VMError(f"hostfwd_add failed: {out}")

    def http_get(self, path: str = "/metrics", guest_port: int = 9000, timeout: float = 30) -> tuple[int, str]:
        """GET ``http://guest:guest_port/path`` through the forwarded port."""
        url = f"http://127.0.0.1:{self.forward(guest_port)}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    # ------------------------------------------------------------ failure injection
    def dynamic_debug(self, spec: str = "file memory_hotplug.c +p") -> int:
        """Enable pr_debug sites (the offline-failure messages are pr_debug)."""
        return self.write(DYNDBG, spec, timeout=None)

    def inject_notifier_error(self, action: str = "MEM_GOING_OFFLINE", err: int = -_errno.EBUSY) -> int:
        """Make the memory notifier chain fail ``action`` with ``err``
        (negative errno; 0 clears).  Returns the write's errno."""
        return self.write(f"{NOTIFIER_DIR}/{action}/error", str(err), timeout=None)

    @contextlib.contextmanager
    def pinned(self, block: int, timeout: float = 60):
        """Pin one user page inside memory block ``block`` (online, Movable)
        for the duration of the ``with``: tests/vm/pin_pages.py vmsplice()s
        it into a pipe that is never read, so offlining the block retries
        migration until the offlining process gets a fatal signal.
        Yields the pinning process's pid."""
        tag = f"pin{block}-{time.monotonic_ns()}"
        log = self.results / f"{tag}.log"
        pin = self.spawn(
            [str(venv_python()), str(REPO / "tests/vm/pin_pages.py"), str(block)], log=f"{GUEST_RESULTS}/{tag}.log"
        )
        try:
            self.wait_for(
                lambda: "pinned" in log.read_text() or self.poll(pin) is not None,
                timeout,
                f"a page of memory{block} to be pinned",
            )
            if "pinned" not in log.read_text():
                raise VMError(f"could not pin a page of memory{block}: {log.read_text()}")
            yield pin
        finally:
            self.kill(pin, signal.SIGKILL)

    @contextlib.contextmanager
    def stuck_offline(self, block: int, timeout: float = 60):
        """Hold memory block ``block`` (online, Movable) in ``going-offline``.

        Pins one of its pages (``pinned``), then starts ``echo offline >
        state`` in the background; yields ``(writer_pid, pin_pid)`` once the
        block reads going-offline.  On exit the writer is SIGKILLed (the
        kernel gives up with EINTR, "signal backoff"), the pin released, and
        the block is back online.
        """
        with self.pinned(block, timeout) as pin:
            writer = self.spawn(["sh", "-c", f"echo offline > {MEMORY}/memory{block}/state"])
            try:
                self.wait_for(
                    lambda: self.block_state(block) == "going-offline" or self.poll(writer) is not None,
                    timeout,
                    f"memory{block} to be going-offline",
                )
                if self.block_state(block) != "going-offline":
                    raise VMError(f"offline of memory{block} ended (rc {self.poll(writer)}) instead of retrying")
                yield writer, pin
            finally:
                self.kill(writer, signal.SIGKILL)
                self.wait_for(
                    lambda: self.block_state(block) in ("online", "offline", None),
                    timeout,
                    f"memory{block} to leave going-offline",
                )

    # ------------------------------------------------------------ capture
    def capture(self, name: str, description: str = "", extra: dict | None = None, timeout: float = 300) -> Path:
        """Snapshot the guest's sysfs/procfs subset with tests/vm/capture.py
        into the results share; returns the archive's host path."""
        meta = {
            "scenario": name,
            "description": description,
            "qemu": self.bed.qemu_version,
            "config": dataclasses.asdict(self.config),
            "accel": self.accel,
            **(extra or {}),
        }
        out = f"{GUEST_RESULTS}/{name}.tar.gz"
        self.python(
            [str(REPO / "tests/vm/capture.py"), "--out", out, "--meta", json.dumps(meta)], timeout=timeout
        ).check("capture")
        return self.results / f"{name}.tar.gz"
