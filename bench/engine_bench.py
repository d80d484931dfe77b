#!/usr/bin/env python3
"""Benchmarks of the engine, run by hand as root (not part of the test suite):

  restore  Restore System on a writable layer of N files, against `rm -rf` of an
           identical layer (the baseline a naive reset would pay).
  create   An incremental restore point of a layer of M MiB, against reading the same
           tree with `tar -c . | cat > /dev/null` (what "disk speed" means for that tree)
           and against mksquashfs at its own default zstd level (15).

Prints each figure and its ratio to the baseline measured in the same run.
Usage: sudo python3 bench/engine_bench.py [--files 50000] [--mib 256]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maintenance.engine import Engine
from maintenance.model import Kind


def fill_layer(upper: Path, files: int, mib: int) -> None:
    per_dir = 500
    for i in range(files):
        d = upper / "usr/share/bench" / f"d{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(b"x" * 64)
    if mib:
        blob = upper / "var/lib/blobs"
        blob.mkdir(parents=True, exist_ok=True)
        for i in range(mib):  # each file distinct: half random, half zeros
            (blob / f"b{i}").write_bytes(os.urandom(1 << 19) + bytes(1 << 19))


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    subprocess.run(["sync"])
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--files", type=int, default=50000)
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--dir", default=None, help="work directory (default: a temp dir in /var/tmp)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(dir=args.dir or "/var/tmp", prefix="ibi-bench-") as tmp:
        root = Path(tmp)
        tree = root / "tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/hostname").write_text("bench\n")
        eng = Engine(root / "data", root / "run")
        eng.data_dir.mkdir()
        eng.init(source_dir=tree)

        # --- restore vs rm -rf
        fill_layer(eng.store.upper, args.files, 0)
        copy = root / "rm-baseline"
        fill_layer(copy, args.files, 0)
        t_rm = timed(lambda: shutil.rmtree(copy))
        t_restore = timed(eng.restore)
        print(f"restore: layer of {args.files} files: Restore System {t_restore:.3f} s, "
              f"rm -rf {t_rm:.3f} s  -> ratio {t_restore / t_rm:.3f}")
        eng.purge()

        # --- create incremental vs tar read vs mksquashfs default level
        fill_layer(eng.store.upper, 2000, args.mib)
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        # (GNU tar skips reading file data when the archive is /dev/null: pipe it)
        t_tar = timed(lambda: subprocess.run(
            f"tar -C {eng.store.upper} -cf - . | cat > /dev/null", shell=True, check=True))
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        alt = root / "default-level.sqfs"
        t_l15 = timed(lambda: subprocess.run(
            ["mksquashfs", str(eng.store.upper), str(alt), "-noappend", "-quiet",
             "-no-progress", "-comp", "zstd"], check=True))
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        meta = None

        def make() -> None:
            nonlocal meta
            meta = eng.create(Kind.INCREMENTAL, name="bench")

        t_create = timed(make)
        assert meta is not None
        print(f"create: incremental of {args.mib} MiB + 2000 files: ibi create {t_create:.2f} s "
              f"(incl. fsync + sha256 read-back), tar read {t_tar:.2f} s -> ratio "
              f"{t_create / t_tar:.2f}; mksquashfs zstd-15 {t_l15:.2f} s -> ibi is "
              f"{t_l15 / t_create:.1f}x faster; sizes {meta.size >> 20} MiB vs "
              f"{alt.stat().st_size >> 20} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
