"""The image's HEALTHCHECK: asks whichever memhp program is PID 1 whether it is up.

One image runs either program, chosen by the command, so the check reads the
command line of PID 1 (``/proc/1/cmdline``) to tell which one it is and where
it listens (``--web.listen-address``, as given on that command line, or the
program's default):

* ``memhp-exporter`` and ``memhp-controller``: ``GET /-/healthy`` (needs no
  credentials, triggers no scrape); HTTPS when ``--web.tls.cert-file`` is given
  or the ``--web.config.file`` names a ``cert_file``;
* ``--once``, ``act``, ``--help``, anything else: nothing listens, so healthy
  means "still running", which Docker already knows: exit 0.

Exit 0 healthy, 1 unhealthy, as Docker's HEALTHCHECK wants. Standard library
only. Kubernetes ignores HEALTHCHECK; the DaemonSet has its own probes on the
same paths.
"""

from __future__ import annotations

import argparse
import os
import re
import ssl
import sys
import urllib.error
import urllib.request

DEFAULTS = {"memhp-exporter": (":10301", "/-/healthy"), "memhp-controller": ("127.0.0.1:10302", "/-/healthy")}


def read_cmdline(path: str) -> list[str]:
    with open(path, "rb") as f:
        raw = f.read()
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def flag_value(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1 :]
    return None


def web_config_has_tls(args: list[str]) -> bool:
    """Whether --web.config.file names a cert_file (a look at the YAML's text: stdlib only)."""
    path = flag_value(args, "--web.config.file")
    if not path:
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    return re.search(r"^\s*cert_file\s*:\s*\S", text, re.MULTILINE) is not None


def target(args: list[str]) -> str | None:
    """The URL to probe for this command line, or None when nothing should listen."""
    program = next((os.path.basename(a) for a in args if os.path.basename(a) in DEFAULTS), None)
    if program is None:
        return None
    rest = args[[os.path.basename(a) for a in args].index(program) + 1 :]
    if any(a in ("--once", "-h", "--help", "--version", "act") for a in rest):
        return None
    default_listen, path = DEFAULTS[program]
    listen = flag_value(rest, "--web.listen-address") or default_listen
    if listen.startswith("["):
        host, _, port = listen[1:].partition("]:")
    else:
        host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if flag_value(rest, "--web.tls.cert-file") or web_config_has_tls(rest) else "http"
    return f"{scheme}://{host}:{port}{path}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cmdline", default="/proc/1/cmdline", help="NUL-separated command line to inspect")
    p.add_argument("--timeout", type=float, default=4.0)
    opts = p.parse_args(argv)
    try:
        url = target(read_cmdline(opts.cmdline))
    except OSError as e:
        print(f"unhealthy: cannot read {opts.cmdline}: {e}", file=sys.stderr)
        return 1
    if url is None:
        return 0
    ctx = None
    if url.startswith("https:"):
        # Liveness only: the certificate names the service, not 127.0.0.1.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=opts.timeout, context=ctx) as r:
            ok = r.status == 200
    except (urllib.error.URLError, OSError) as e:
        print(f"unhealthy: {url}: {e}", file=sys.stderr)
        return 1
    if not ok:
        print(f"unhealthy: {url}: HTTP {r.status}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
