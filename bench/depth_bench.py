#!/usr/bin/env python3
"""What a deep stack costs every file lookup, and what compaction gives back (run by hand,
as root; not part of the test suite).

A base image is squashed from a real tree (default /usr/share, ~55,000 files here); then
restore points are stacked on it, each changing a few files spread over the tree (as
package updates do), the way ``ibi create --incremental`` squashes a layer. For each
depth the stack is assembled read-only as ``ibi mount`` does, and three metadata
workloads run on it, warm (each round after one warm-up): ``find`` of every entry, an
``lstat`` of every entry (Python's os.walk + lstat), and ``tar cf /dev/null`` (GNU tar
reads no data then). Baseline, measured in the same run: the base image mounted bare
(one squashfs, no overlay), in the same interleaved rounds. Then the deepest stack is
merged by ``ibi compact`` and measured again, in the same rounds as a stack of the base
alone mounted as ibi mounts it (the target: compaction gives depth 1's cost back).

Prints a table (median seconds; ratio to bare squashfs) and, with --json FILE, writes
the figures.

Usage: sudo python3 bench/depth_bench.py [--tree /usr/share] [--depths 1,4,16,64]
                                         [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common

from maintenance import mounts, squash
from maintenance.engine import Engine
from maintenance.model import Kind


def workloads(root: Path) -> dict[str, list[str] | None]:
    return {"find": ["find", str(root), "-xdev"],
            "tar": ["tar", "-C", str(root), "-cf", "/dev/null", "."],
            "lstat": None}



def run_once(root: Path, argv: list[str] | None) -> float:
    t = time.perf_counter()
    if argv is None:
        common.lstat_all(root)
    else:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def measure(roots: dict[str, Path], rounds: int) -> dict[str, dict[str, float]]:
    """Median seconds of each workload on each root, in interleaved rounds."""
    out: dict[str, dict[str, float]] = {k: {} for k in roots}
    for name in workloads(Path("/")):
        med = common.paired({k: functools.partial(run_once, r, workloads(r)[name])
                             for k, r in roots.items()}, rounds)
        for k, v in med.items():
            out[k][name] = v
    return out


def stack_points(eng: Engine, work: Path, files: list[str], depth: int) -> None:
    """Stack restore points on the base until the stack is ``depth`` images deep: each
    point rewrites 20 files of the tree (spread over it) and deletes one."""
    tab = eng.roottab()
    i = len(tab) - 1
    while len(tab) < depth:
        layer = work / f"layer{i}"
        for k in range(20):
            rel = files[(i * 7919 + k * 104729) % len(files)]
            dest = layer / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(f"point {i} file {k}\n")
        gone = layer / files[(i * 31337) % len(files)]
        if not gone.exists():
            gone.parent.mkdir(parents=True, exist_ok=True)
            os.mknod(gone, 0o020000, os.makedev(0, 0))  # a whiteout
        name = f"p{i:03d}"
        tmp = eng.store.tmp_path(name, ".sqfs")
        squash.mksquashfs(layer, tmp)
        eng._commit_image(tmp, name, Kind.INCREMENTAL, "", tuple(tab), tab[-1], "zstd", None)
        tab.append(name)
        i += 1
    eng.store.write_roottab(tab)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default="/usr/share")
    ap.add_argument("--depths", default="1,4,16,64")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="default: bench/results/depth.json")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts)", file=sys.stderr)
        return 2
    depths = sorted(int(d) for d in args.depths.split(","))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-depth-") as tmp:
        root = Path(tmp)
        eng = Engine(root / "data", root / "run")
        eng.data_dir.mkdir()
        t = time.perf_counter()
        eng.init(source_dir=args.tree)
        print(f"base from {args.tree}: {eng.store.image_path('base').stat().st_size >> 20} "
              f"MiB in {time.perf_counter() - t:.1f} s")
        mnt, bare_mnt = root / "mnt", root / "bare"
        mnt.mkdir()
        rows_bare: list[dict[str, float]] = []
        with mounts.temporary_mounts() as m:
            m.image(eng.store.image_path("base"), bare_mnt)
            files = sorted(os.path.relpath(os.path.join(top, f), bare_mnt)
                           for top, _d, fs in os.walk(bare_mnt) for f in fs)
            print(f"{len(files)} files")

            one_stack: dict[str, float] = {}

            def row(label: str, beside_one: bool = False) -> None:
                roots = {"bare": bare_mnt, "stack": mnt}
                if beside_one:  # a stack of the base alone, as ibi mounts it, same rounds
                    one = root / "one"
                    one.mkdir(exist_ok=True)
                    m.image(eng.store.image_path("base"), root / "one-lower" / "base")
                    m.overlay(one, [root / "one-lower" / "base"], readonly=True)
                    roots["one"] = one
                eng.mount(mnt, readonly=True)
                try:
                    figs = measure(roots, args.rounds)
                finally:
                    eng.umount(mnt)
                rows_bare.append(figs["bare"])
                rows.append({"stack": label, "depth": len(eng.roottab()), **figs["stack"]})
                one_stack.update(figs.get("one", {}))

            for d in depths:
                stack_points(eng, root / "layers", files, d)
                row(f"ibi, {d} image{'s' if d > 1 else ''}")
            if len(eng.roottab()) > 2:
                t = time.perf_counter()
                meta = eng.compact(name="compacted")
                spent = time.perf_counter() - t
                row(f"ibi, {depths[-1]} compacted", beside_one=True)
                rows[-1]["compact_s"] = round(spent, 2)
                print(f"ibi compact of {depths[-1] - 1} points: {spent:.1f} s, "
                      f"{meta.size >> 10} KiB")
    names = list(workloads(Path("/")))
    print(f"\n{'stack (ratio: to bare squashfs, same rounds)':<46}"
          + "".join(f"{n:>16}" for n in names))
    for r, b in zip(rows, rows_bare, strict=True):
        cells = "".join(f"{r[n]:>8.3f} {r[n] / b[n]:>5.2f}x " for n in names)  # type: ignore[operator]
        print(f"{r['stack']:<46}{cells}")
    out = []
    for r, b in zip(rows, rows_bare, strict=True):
        for n in names:
            out.append(common.row(f"{n}, warm", str(r["stack"]), float(r[n]),  # type: ignore[arg-type]
                                  baseline="bare squashfs", baseline_value=b[n]))
    if one_stack and "compact_s" in rows[-1]:
        for n in names:  # the compacted stack and a 1-image stack in the same rounds
            out.append(common.row(f"{n}, warm", str(rows[-1]["stack"]), float(rows[-1][n]),  # type: ignore[arg-type]
                                  baseline="ibi, 1 image (same rounds)",
                                  baseline_value=one_stack[n],
                                  target="after compaction: depth 1's cost (<= 1.05x)",
                                  max_ratio=1.05,
                                  note=f"compact took {rows[-1]['compact_s']} s"))
    common.write("depth", out, {"tree": args.tree, "files": len(files), "rounds": args.rounds,
                                "depths": args.depths}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
