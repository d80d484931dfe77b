#!/usr/bin/env python3
"""``ibi create --incremental`` against the compressor's own speed (issue 12, item 4; run
by hand, as root; not part of the test suite).

1. By the size of the change: the writable layer holds 2,000 small files and N MiB of
   1 MiB files, each half random and half zeros (as bench/engine_bench.py fills it).
   ibi's restore point of it (``Engine.create(Kind.INCREMENTAL)``: the space check, the
   state capture, mksquashfs, the fsync and sha256 of the image, the commit, the layer
   set aside and a fresh one made; its files are deleted afterwards by ``ibi reclaim``,
   which ``ibi create`` starts in the background at idle priority, untimed here) is timed
   against the baseline measured on the same layer in the same run::

       tar -C UPPER -cf - . | zstd -3 -T0 -q -o FILE && sync FILE

   Target: create <= 1.15x the baseline. Shown beside them, with no target: ``rm -rf`` of
   a layer filled alike (what the deferred deletion costs on this file system: ext4's
   ``discard`` option makes it pay a synchronous discard for every file deleted).
2. By the size of the base image: a 10 MiB change over a base of ~50 MB and of ~500 MB
   (its tree incompressible: the image is about the tree's size). Create must not read
   the stack below the layer: its time must be flat, the large base's within 1.15x of the
   small one's.

Every timed run starts cold (bench/common.py drop_caches before each); the subjects run in
interleaved rounds and the median is kept. The layer is refilled, untimed, whenever a
create has emptied it. Prints a table and writes bench/results/create.json (bench/
common.py's format) or --json FILE.

Usage: sudo python3 bench/create_bench.py [--sizes 10,100,1000] [--bases 50,500]
                                          [--rounds 3] [--quick] [--json FILE] [--dir D]
  --quick: changes of 10 and 50 MiB, bases of 20 and 100 MB, one round (a smoke run)
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # bench/common.py
from engine_bench import fill_layer

from maintenance.engine import Engine
from maintenance.model import Kind

TARGET, MAX_RATIO = "<= 1.15x", 1.15
FLAT_TARGET = "flat: within 1.15x of the small base's time"
BASELINE = "tar | zstd -3 -T0 + sync"
IBI = "ibi create --incremental"
RM = "rm -rf of a like layer"
SMALL_FILES = 2000
BASE_CHANGE_MIB = 10


def new_store(where: Path, base_mib: int = 0) -> Engine:
    """A store whose base image is squashed from a tree of ``base_mib`` MiB of random
    data (plus /etc/hostname)."""
    tree = where / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("bench\n")
    blobs = tree / "usr/lib/bench"
    blobs.mkdir(parents=True)
    for i in range(base_mib):
        (blobs / f"r{i}").write_bytes(os.urandom(1 << 20))
    eng = Engine(where / "data", where / "run")
    eng.data_dir.mkdir()
    eng.init(source_dir=tree)
    shutil.rmtree(tree)
    return eng


class Layer:
    """Fills ``eng``'s writable layer (and, with ``copy``, a like directory for rm -rf)
    when empty, and makes each create's name."""

    def __init__(self, eng: Engine, mib: int, copy: Path | None = None) -> None:
        self.eng, self.mib, self.copy = eng, mib, copy
        self.names = (f"c{i}" for i in itertools.count())

    def fill(self) -> None:
        if not any(self.eng.store.upper.iterdir()):
            fill_layer(self.eng.store.upper, SMALL_FILES, self.mib)
        if self.copy is not None and not self.copy.exists():
            fill_layer(self.copy, SMALL_FILES, self.mib)

    def create(self) -> None:
        self.eng.create(Kind.INCREMENTAL, name=next(self.names))


def tar_zstd(upper: Path, out: Path) -> None:
    subprocess.run(f"tar -C {upper} -cf - . | zstd -3 -T0 -q -o {out} && sync {out}",
                   shell=True, check=True)


def by_change(work: Path, mib: int, rounds: int) -> list[dict[str, Any]]:
    eng = new_store(work)
    layer = Layer(eng, mib, copy=work / "rm-copy")
    out = work / "baseline.tar.zst"
    zst: list[int] = []

    def baseline() -> None:
        tar_zstd(eng.store.upper, out)
        zst.append(out.stat().st_size)

    def cold() -> None:  # untimed: the cleared layer deleted (ibi reclaim), the layer
        eng.reclaim()    # refilled, the last output gone, caches cold
        layer.fill()
        out.unlink(missing_ok=True)
        common.drop_caches()

    cold()
    baseline()  # a warm-up of each (the engine's lazy imports)
    layer.create()
    cold()
    med = common.paired({BASELINE: baseline,
                         IBI: layer.create,
                         RM: lambda: shutil.rmtree(work / "rm-copy")},
                        rounds, warm=False, cold=cold)
    images = sorted(m.size for m in eng.images() if m.name.startswith("c"))
    note = (f"{SMALL_FILES} small files + {mib} MiB (half random); median of {rounds} "
            f"interleaved rounds, caches dropped before each run; image "
            f"{images[len(images) // 2] / 1e6:.1f} MB")
    print(f"{mib} MiB change: " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()),
          flush=True)
    case = f"change of {mib} MiB"
    return [common.row(case, BASELINE, med[BASELINE],
                       note=f"output {sorted(zst)[len(zst) // 2] / 1e6:.1f} MB"),
            common.row(case, IBI, med[IBI], baseline=BASELINE,
                       baseline_value=med[BASELINE], target=TARGET, max_ratio=MAX_RATIO,
                       note=note),
            common.row(case, RM, med[RM], baseline=BASELINE, baseline_value=med[BASELINE],
                       note="the deletion create leaves to ibi reclaim (background)")]


def by_base(work: Path, bases: list[int], rounds: int) -> list[dict[str, Any]]:
    layers = {}
    for mib in bases:
        eng = new_store(work / f"base{mib}", mib)
        size = eng.store.image_path("base").stat().st_size
        layers[f"base {size / 1e6:.0f} MB"] = Layer(eng, BASE_CHANGE_MIB)

    def cold() -> None:
        for layer in layers.values():
            layer.eng.reclaim()
            layer.fill()
        common.drop_caches()

    subjects: dict[str, Callable[[], object]] = {k: v.create for k, v in layers.items()}
    cold()
    for fn in subjects.values():
        fn()
    cold()
    med = common.paired(subjects, rounds, warm=False, cold=cold)
    print(f"{BASE_CHANGE_MIB} MiB change: " + "  ".join(f"{k} {v:.3f}"
                                                         for k, v in med.items()), flush=True)
    small, *others = med
    case = f"{BASE_CHANGE_MIB} MiB change, by base size"
    note = f"median of {rounds} interleaved rounds, caches dropped before each run"
    return [common.row(case, f"create, {small}", med[small], note=note)] + [
        common.row(case, f"create, {k}", med[k], baseline=f"create, {small}",
                   baseline_value=med[small], target=FLAT_TARGET, max_ratio=MAX_RATIO,
                   note=note) for k in others]


def fs_of(path: Path) -> str:
    r = subprocess.run(["findmnt", "-no", "FSTYPE,OPTIONS", "-T", str(path)],
                       capture_output=True, text=True)
    return r.stdout.strip() or "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,100,1000", help="changes, MiB (default 10,100,1000)")
    ap.add_argument("--bases", default="50,500", help="base trees, MiB (default 50,500)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="10,50 MiB; bases 20,100; 1 round")
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--dir", default="/var/tmp", help="work directory (the data file system)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts and drops caches)", file=sys.stderr)
        return 2
    if args.quick:
        args.sizes, args.bases, args.rounds = "10,50", "20,100", 1
    sizes = [int(s) for s in args.sizes.split(",")]
    bases = sorted(int(s) for s in args.bases.split(","))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-create-") as tmp:
        root = Path(tmp)
        data_fs = fs_of(root)
        for mib in sizes:
            work = root / f"change{mib}"
            work.mkdir()
            rows += by_change(work, mib, args.rounds)
            shutil.rmtree(work)
        rows += by_base(root / "bases", bases, args.rounds)
    print()
    print(common.table(rows))
    common.write("create", rows, {"sizes_mib": sizes, "bases_mib": bases,
                                  "rounds": args.rounds, "small_files": SMALL_FILES,
                                  "base_change_mib": BASE_CHANGE_MIB, "data_fs": data_fs},
                 args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
