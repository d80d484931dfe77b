#!/usr/bin/env python3
"""Run every benchmark of bench/ one after the other, then write bench/RESULTS.md (run by
hand, as root, on a machine doing nothing else: a busy machine makes every ratio noisy).

  runtime   the ibi stack against native, bare squashfs, fuse-overlayfs, unionfs-fuse
  overlay   where the stack's cost over bare squashfs goes (overlay options, layouts)
  depth     a deep stack's cost per lookup, and what ibi compact gives back
  create    ibi create against tar | zstd, as the change and the base grow
  restore   Restore System at 50,000 and 1,000,000 files
  status    ibi status --json as the restore points grow
  menu      the maintenance menu to its first full screen
  boot      boot to login with and without ibi, the initramfs hook's own cost (qemu)

Each writes bench/results/NAME.json; ``bench/report.py`` turns them into RESULTS.md. A
bench that fails is named and the others still run (exit status 1 at the end).

Usage: sudo python3 bench/suite.py [--quick] [--only a,b] [--skip boot]
  --quick   small sizes and few rounds: a smoke run of the suite (minutes), not figures
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHES: dict[str, tuple[list[str], list[str]]] = {  # name: (full args, quick args)
    "runtime": (["runtime_bench.py"], ["runtime_bench.py", "--quick"]),
    "overlay": (["overlay_bench.py"], ["overlay_bench.py", "--tree", "/usr/share/doc",
                                       "--rounds", "3"]),
    "depth": (["depth_bench.py"], ["depth_bench.py", "--tree", "/usr/share/doc",
                                   "--depths", "1,4", "--rounds", "2"]),
    "create": (["create_bench.py"], ["create_bench.py", "--quick"]),
    "restore": (["restore_bench.py"], ["restore_bench.py", "--sizes", "5000"]),
    "status": (["status_bench.py"], ["status_bench.py", "--points", "1,10", "--runs", "2"]),
    "menu": (["menu_startup.py"], ["menu_startup.py", "--points", "10", "--runs", "2"]),
    "boot": (["boot_bench.py"], ["boot_bench.py", "--boots", "1"]),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated bench names")
    ap.add_argument("--skip", default="", help="comma-separated bench names")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (the benches mount)", file=sys.stderr)
        return 2
    names = [n for n in (args.only.split(",") if args.only else BENCHES) if n]
    unknown = [n for n in names + args.skip.split(",") if n and n not in BENCHES]
    if unknown:
        print(f"bench: unknown bench {unknown[0]!r} (one of: {', '.join(BENCHES)})",
              file=sys.stderr)
        return 2
    failed = []
    for n in names:
        if n in args.skip.split(","):
            continue
        argv = BENCHES[n][1 if args.quick else 0]
        if not (HERE / argv[0]).is_file():
            print(f"== {n}: {argv[0]} is missing", flush=True)
            failed.append(n)
            continue
        print(f"== {n}: {' '.join(argv)}", flush=True)
        t = time.monotonic()
        r = subprocess.run([sys.executable, str(HERE / argv[0]), *argv[1:]])
        print(f"== {n}: exit {r.returncode} after {time.monotonic() - t:.0f} s", flush=True)
        if r.returncode:
            failed.append(n)
    subprocess.run([sys.executable, str(HERE / "report.py")])
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
