"""Re-capture the exporter's fixture archives from real guests.

    .venv/bin/python scripts/refresh-fixtures            # all scenarios
    .venv/bin/python scripts/refresh-fixtures imbalanced # just one
    .venv/bin/python -m tests.vm.refresh_fixtures        # the same, from the repo's top
    make fixtures

Boots Debian's kernel in QEMU (tests/vm), brings it into each scenario's state
(tests/vm/scenarios.py), runs tests/vm/capture.py in the guest and writes
tests/fixtures/<name>.tar.gz.  Never touches this machine's /sys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.vm.guest import REPO, TestBed
from tests.vm.scenarios import SCENARIOS, run_scenario


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", help=f"scenarios (default all): {', '.join(SCENARIOS)}")
    ap.add_argument(
        "--out",
        type=Path,
        default=REPO / "tests" / "fixtures",
        help="where the archives go (relative: to the repo's top)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    names = args.names or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        ap.error(f"unknown scenario(s): {unknown}")
    work = Path(tempfile.mkdtemp(prefix="memhp-fixtures-"))
    bed = TestBed.prepare(work)
    print(f"kernel: {bed.kernel.describe}; {bed.qemu_version}")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    try:
        for name in names:
            sc = SCENARIOS[name]
            t0 = time.monotonic()
            g = bed.boot(sc.config)
            try:
                t1 = time.monotonic()
                facts, archive = run_scenario(
                    g, sc, extra={"kernel_package": bed.kernel.package, "kernel_version": bed.kernel.version}
                )
                dest = args.out / sc.archive
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive, dest)
                print(
                    f"{name}: boot {t1 - t0:.1f}s, scenario+capture "
                    f"{time.monotonic() - t1:.1f}s -> {dest} ({dest.stat().st_size} bytes)\n"
                    f"  {json.dumps(facts)}",
                    flush=True,
                )
            except Exception as e:
                failed.append(name)
                print(f"{name}: FAILED: {e}\n--- console tail ---\n{g.console_tail(40)}", file=sys.stderr, flush=True)
            finally:
                g.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
