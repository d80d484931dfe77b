#!/usr/bin/env python3
"""Restore System against the size of the writable layer (run by hand, as root; not part
of the test suite).

For each size N (default 50,000 and 1,000,000 files) a store is made from a small base
with a saved state capture (so Restore System renders the managed config into the fresh
layer, as on an installed machine), and its writable layer is filled with N small files
in directories of 500. Then, in order:

  plan      ``restore_plan()``: the figures the menu and ``ibi restore`` show before they
            ask (a walk of the layer: proportional to it, before the question, no change)
  restore   ``restore(discarded=plan)``: the action after the confirmation; target < 100 ms
            at any size (the layer is renamed aside whatever its size)
  purge     ``ibi purge`` of the set-aside layer: giving the space back afterwards, the
            baseline (what removing the layer costs: a naive reset's ``rm -rf``)

Prints the table and writes bench/results/restore.json (or --json FILE).

Usage: sudo python3 bench/restore_bench.py [--sizes 50000,1000000] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common

from maintenance.engine import Engine


def fill(upper: Path, files: int) -> None:
    data = b"x" * 64
    for i in range(files):
        if i % 500 == 0:
            d = upper / "var/lib/bench" / f"d{i // 500}"
            d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, data)
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="50000,1000000")
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts)", file=sys.stderr)
        return 2
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-restore-") as tmp:
            root = Path(tmp)
            tree = root / "tree"
            (tree / "etc").mkdir(parents=True)
            (tree / "etc/hostname").write_text("bench\n")
            (tree / "etc/timezone").write_text("Etc/UTC\n")
            eng = Engine(root / "data", root / "run")
            eng.data_dir.mkdir()
            eng.init(source_dir=tree)
            eng.state_save()
            t = time.perf_counter()
            fill(eng.store.upper, n)
            os.sync()
            print(f"{n} files written in {time.perf_counter() - t:.1f} s", flush=True)
            t = time.perf_counter()
            plan = eng.restore_plan()
            t_plan = time.perf_counter() - t
            assert plan.files >= n, plan
            t = time.perf_counter()
            eng.restore(discarded=plan)
            t_restore = time.perf_counter() - t
            assert sum(1 for _ in eng.store.upper.rglob("*")) < 100  # the fresh layer
            os.sync()
            t_purge = common.timed(eng.purge)
            rows.append(common.row(f"Restore System, {n:,} files", "ibi restore", t_restore,
                                   baseline="rm -rf of the layer (ibi purge)",
                                   baseline_value=t_purge, target="< 100 ms at any size",
                                   max_value=0.1,
                                   note="after the confirmation; the purge gives the "
                                   "space back afterwards"))
            rows.append(common.row(f"Restore System, {n:,} files", "count shown first",
                                   t_plan, note="restore_plan(): the figures the "
                                   "confirmation shows, before anything changes"))
            print(common.table(rows[-2:]), flush=True)
    common.write("restore", rows, {"sizes": args.sizes}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
