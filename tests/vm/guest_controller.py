"""``memhp-controller`` run inside a QEMU guest (tests/vm/guest.py), for the
controller's VM tests and the e2e loop.

Its policy, journal, bearer token and log live on the guest's tmpfs in a
private directory; every sysfs write is the guest kernel's.  One-shot
commands (``act``) run as ``python -m memhp.controller.cli`` from the repo;
the daemon runs as the installed console script from ``/``, as a service
would.

    ctl = GuestController(g, rules=[...], guards={"cooldown": "1s"})
    rc, out = ctl.act("offline", "--count", "2")     # act --json: (exit code, JSON)
    ctl.journal("attempt_end")                        # the journal's records of a type
    port = ctl.start(10302, token="secret")           # the daemon; host port forwarded to it
    ctl.stop()
"""

from __future__ import annotations

import json
import signal
import urllib.error
import uuid

import yaml

from tests.vm.guest import GUEST_RESULTS, REPO, Guest, venv_python

CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "memhp-controller"
# Fast backoff, generous per-attempt deadline: TCG is slow and the host is shared.
RETRY = {
    "attempts": 3,
    "attempt_timeout": "60s",
    "kill_grace": "5s",
    "total_timeout": "10m",
    "backoff_initial": "50ms",
    "backoff_max": "200ms",
    "backoff_jitter": "50ms",
}
GUARDS = {"min_available": "64M", "cooldown": "0s"}


class GuestController:
    """``memhp-controller`` in the guest, with a private policy and journal."""

    def __init__(
        self,
        g: Guest,
        rules: list[dict] | None = None,
        guards: dict | None = None,
        retry: dict | None = None,
        name: str = "ctl",
    ) -> None:
        self.g = g
        self.name = f"{name}-{uuid.uuid4().hex[:8]}"
        self.dir = f"/tmp/memhp-{self.name}"
        self.config = f"{self.dir}/policy.yaml"
        self.journal_path = f"{self.dir}/journal.jsonl"
        self.token_path = f"{self.dir}/token"
        self.log = f"controller-{self.name}.log"  # in the results share: g.results / log on the host
        self.pid: int | None = None
        g.run(["mkdir", "-p", self.dir]).check("mkdir")
        self.write_policy(rules, guards, retry)

    def write_policy(self, rules: list[dict] | None = None, guards: dict | None = None, retry: dict | None = None):
        """(Re)write the policy: GUARDS and RETRY with ``guards`` and ``retry`` merged in."""
        doc: dict = {
            "controller": {"journal": self.journal_path},
            "guards": {"pause_file": f"{self.dir}/pause", **GUARDS, **(guards or {})},
            "retry": {**RETRY, **(retry or {})},
        }
        if rules:
            doc["rules"] = rules
        self.g.run(f"cat > {self.config}", input=yaml.safe_dump(doc)).check("write policy")

    # ------------------------------------------------------------ one-shot commands
    def argv(self, *args: str) -> list[str]:
        """``python -m memhp.controller.cli ARGS --config.file POLICY``, for ``g.spawn``."""
        return [str(venv_python()), "-m", "memhp.controller.cli", *args, "--config.file", self.config]

    def act(self, *args: str, timeout: float = 600) -> tuple[int, dict]:
        """``act ARGS --json``: the exit code and the printed JSON document."""
        r = self.g.python(
            ["-m", "memhp.controller.cli", "act", *args, "--json", "--config.file", self.config], timeout=timeout
        )
        assert not r.timed_out, r.stderr
        try:
            return r.rc, json.loads(r.stdout[r.stdout.index("{") :])
        except ValueError:
            raise AssertionError(f"act rc={r.rc} printed no JSON:\n{r.stdout}\n{r.stderr}") from None

    # ------------------------------------------------------------ the journal
    def journal_text(self) -> str:
        return self.g.try_read(self.journal_path, "") or ""

    def journal(self, type_: str | None = None) -> list[dict]:
        recs = [json.loads(line) for line in self.journal_text().splitlines() if line.strip()]
        return [r for r in recs if type_ is None or r["type"] == type_]

    # ------------------------------------------------------------ the daemon
    def start(self, port: int, *flags: str, token: str | None = None, timeout: float = 300) -> int:
        """The console script as a daemon listening on guest ``port`` (bearer ``token`` if given),
        from a cwd outside the repo; waits for ``/-/healthy`` and returns the host port forwarded to it."""
        argv = [str(CONSOLE_SCRIPT), "--config.file", self.config, f"--web.listen-address=:{port}"]
        if token is not None:
            self.g.run(f"umask 077 && cat > {self.token_path}", input=token + "\n").check("write token")
            argv += ["--web.auth.bearer-token-file", self.token_path]
        argv += ["--log.level", "debug", *flags]
        assert CONSOLE_SCRIPT.exists(), f"{CONSOLE_SCRIPT}: the console script is not installed (scripts/setup.sh)"
        self.pid = self.g.spawn(argv, log=f"{GUEST_RESULTS}/{self.log}", cwd="/")
        host_port = self.g.forward(port)

        def healthy() -> bool:
            assert self.pid is not None and self.g.poll(self.pid) is None, f"controller exited:\n{self.log_text()}"
            try:
                return self.g.http_get("/-/healthy", port, timeout=10)[0] == 200
            except (urllib.error.URLError, OSError):
                return False

        self.g.wait_for(healthy, timeout, f"the controller daemon ({self.name}) to listen", interval=0.5)
        return host_port

    def log_text(self, tail: int = 4000) -> str:
        try:
            return (self.g.results / self.log).read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int | None:
        """Signal the daemon and wait for it; its exit code (None if none was started)."""
        pid, self.pid = self.pid, None
        if pid is None:
            return None
        rc = self.g.poll(pid)
        return rc if rc is not None else self.g.kill(pid, sig, timeout=timeout)
