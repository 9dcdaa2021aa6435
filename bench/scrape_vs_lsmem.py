#!/usr/bin/env python3
"""One full scrape (the whole ``memhp-exporter --once`` process) against
``lsmem --sysroot`` on the same synthetic tree, in the same run.

    .venv/bin/python bench/scrape_vs_lsmem.py [--sizes 1000,10000,100000] [--runs 5] [--write-doc]

Reports medians, the ratio memhp/lsmem (target <= 0.75 at 100k blocks), the
exposition size and the exporter's peak RSS (target < 80 MiB at 100k blocks,
default configuration). Trees go to /dev/shm (tmpfs), as sysfs is memory-backed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.synth_tree import REPO, make_tree

LSMEM = ["lsmem", "-J", "-a", "-o", "RANGE,SIZE,STATE,REMOVABLE,BLOCK,NODE,ZONES"]
DOC = REPO / "docs" / "performance.md"


def run_measured(argv: list[str]) -> tuple[float, int, int, float]:
    """Wall seconds, peak RSS in KiB, stdout bytes and CPU seconds of one child.

    RUSAGE_CHILDREN's ru_maxrss is the max over every child ever reaped, so a
    small wrapper reaps the measured process alone with wait4.
    """
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *argv], capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {p.stderr.decode()[-2000:]}")
    rss, size, cpu = p.stderr.decode().strip().splitlines()[-1].split()
    return wall, int(rss), int(size), float(cpu)


_RSS_WRAPPER = """
import os, subprocess, sys, time
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
size = 0
while chunk := p.stdout.read(1 << 16):
    size += len(chunk)
_, status, ru = os.wait4(p.pid, 0)
sys.stderr.write(f"{ru.ru_maxrss} {size} {ru.ru_utime + ru.ru_stime}\\n")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def bench(n: int, runs: int, base: Path) -> dict:
    root = make_tree(base / f"tree-{n}", n)
    exporter = [
        str(Path(sys.executable).with_name("memhp-exporter")),
        "--once",
        "--path.sysfs",
        str(root / "sys"),
        "--path.procfs",
        str(root / "proc"),
    ]
    lsmem = LSMEM + ["--sysroot", str(root)]
    ours, ref = [], []
    for _ in range(runs):  # interleaved, so drift hits both alike
        ours.append(run_measured(exporter))
        ref.append(run_measured(lsmem))
    med = statistics.median
    wall_ours, wall_ref = med(r[0] for r in ours), med(r[0] for r in ref)
    cpu_ours, cpu_ref = med(r[3] for r in ours), med(r[3] for r in ref)
    return {
        "blocks": n,
        "memhp_s": wall_ours,
        "lsmem_s": wall_ref,
        "ratio": wall_ours / wall_ref,
        "memhp_cpu_s": cpu_ours,
        "lsmem_cpu_s": cpu_ref,
        "cpu_ratio": cpu_ours / cpu_ref,
        "memhp_rss_mib": max(r[1] for r in ours) / 1024,
        "lsmem_rss_mib": max(r[1] for r in ref) / 1024,
        "exposition_bytes": ours[0][2],
    }


def render(results: list[dict], runs: int) -> str:
    lines = [
        "| blocks | memhp-exporter --once (wall / CPU) | lsmem --sysroot -J -a (wall / CPU) | wall ratio (target ≤ 0.75 at 100k) | CPU ratio | memhp peak RSS (target < 80 MiB) | lsmem peak RSS | exposition |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['blocks']:,} | {r['memhp_s'] * 1000:.0f} / {r['memhp_cpu_s'] * 1000:.0f} ms | "
            f"{r['lsmem_s'] * 1000:.0f} / {r['lsmem_cpu_s'] * 1000:.0f} ms | {r['ratio']:.2f} | "
            f"{r['cpu_ratio']:.2f} | {r['memhp_rss_mib']:.1f} MiB | {r['lsmem_rss_mib']:.1f} MiB | "
            f"{r['exposition_bytes'] / 1024:.1f} KiB |"
        )
    lines.append("")
    lines.append(
        f"Medians of {runs} interleaved runs each, whole processes (Python start-up included), "
        f"trees on tmpfs; {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}."
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dir", default="/dev/shm/memhp-bench")
    ap.add_argument("--write-doc", action="store_true", help=f"replace the results table in {DOC}")
    args = ap.parse_args()
    base = Path(args.dir)
    results = []
    for n in map(int, args.sizes.split(",")):
        r = bench(n, args.runs, base)
        results.append(r)
        print(
            f"{n:>7} blocks: memhp {r['memhp_s']:.3f}s  lsmem {r['lsmem_s']:.3f}s  ratio {r['ratio']:.2f}  "
            f"cpu ratio {r['cpu_ratio']:.2f}  "
            f"rss {r['memhp_rss_mib']:.1f} MiB  exposition {r['exposition_bytes']} B",
            flush=True,
        )
    table = render(results, args.runs)
    print(table)
    if args.write_doc:
        text = DOC.read_text()
        start, end = "<!-- bench:scrape_vs_lsmem -->", "<!-- /bench:scrape_vs_lsmem -->"
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        DOC.write_text(f"{head}{start}\n{table}\n{end}{tail}")
    import shutil

    shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
