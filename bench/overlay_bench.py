#!/usr/bin/env python3
"""Where the ibi stack's cost over bare squashfs goes: overlay options, layouts and
per-entry figures (run by hand, as root; not part of the test suite).

One squashfs image is made from a tree (default /usr/share) and loop-mounted twice: once
bare (the baseline) and once as the lower of several overlays, each a variant of what ibi
could mount:

  ibi            ibi's options (redirect_dir=off,metacopy=off,index=off,xino=off), an
                 upper and work dir on the same file system as the data partition
  ibi,uuid=off   the same with uuid=off (no file handles encoded for the upper)
  kernel         the kernel's defaults (redirect_dir, index, xino, metacopy as built)
  xino=auto      ibi's options but xino left to the kernel (inode numbers remapped)
  tmpfs upper    ibi's options, the upper on tmpfs (what a Live Review mounts)
  read-only      ibi's options, no upper: the image and an empty directory as lowers
                 (what ``ibi mount --readonly`` mounts)

Each read workload runs warm in interleaved rounds (bench/common.paired): find, an lstat of
every entry, ``tar -cf /dev/null`` (metadata: GNU tar opens directories, reads no data) and
``tar -cf - | cat`` (all data). Prints seconds, the ratio to bare squashfs and the extra
microseconds per entry, and writes bench/results/overlay.json (or --json FILE).

Usage: sudo python3 bench/overlay_bench.py [--tree /usr/share] [--rounds 9] [--json F]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common

from maintenance import mounts, squash

IBI = mounts.OVERLAY_OPTIONS



def workloads(root: str) -> dict[str, Callable[[], object]]:
    def run(cmd: str) -> Callable[[], object]:
        return lambda: subprocess.run(cmd, shell=True, check=False,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"find": run(f"find {root} -xdev"),
            "lstat": lambda: common.lstat_all(root),
            "tar (metadata)": run(f"tar -C {root} -cf /dev/null ."),
            "tar | cat (data)": run(f"tar -C {root} -cf - . | cat > /dev/null")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default="/usr/share")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-overlay-") as tmp, \
            mounts.temporary_mounts() as m:
        root = Path(tmp)
        img = root / "base.sqfs"
        print(f"squashing {args.tree} ...", flush=True)
        squash.mksquashfs(Path(args.tree), img)
        bare, low = root / "bare", root / "low"
        for d in (bare, low):
            d.mkdir()
            m.image(img, d)
        entries = common.lstat_all(str(bare))
        tm = root / "tmpfs"
        tm.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "bench", str(tm)],
                       check=True)
        mnts = {"bare squashfs": str(bare)}
        try:
            variants = {"ibi": (IBI, root), "ibi,uuid=off": (IBI + ",uuid=off", root),
                        "kernel": ("", root), "xino=auto": (IBI.replace(",xino=off", ""), root),
                        "tmpfs upper": (IBI, tm), "read-only": (IBI, None)}
            for name, (opts, updir) in variants.items():
                mp = root / f"m-{len(mnts)}"
                mp.mkdir()
                if updir is None:
                    empty = root / "empty"
                    empty.mkdir()
                    o = f"{IBI},lowerdir={low}:{empty}"
                else:
                    u, w = updir / f"u{len(mnts)}", updir / f"w{len(mnts)}"
                    u.mkdir()
                    w.mkdir()
                    o = ",".join(x for x in (opts, f"lowerdir={low},upperdir={u},workdir={w}")
                                 if x)
                r = subprocess.run(["mount", "-t", "overlay", "-o", o, "overlay", str(mp)],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(f"skipped {name}: {r.stderr.strip()}")
                    continue
                mnts[name] = str(mp)
            print(f"{entries} entries; {args.rounds} rounds", flush=True)
            for wl in workloads("/"):
                subjects = {name: workloads(mp)[wl] for name, mp in mnts.items()}
                cpu: dict[str, float] = {}
                med = common.paired(subjects, args.rounds, cpu=cpu)
                base, cbase = med["bare squashfs"], cpu["bare squashfs"]
                for name, s in med.items():
                    extra = (s - base) / entries * 1e6
                    rows.append(common.row(
                        f"{wl}, warm", name, s, baseline="bare squashfs", baseline_value=base,
                        target="<= 1.10x" if name == "ibi" else None,
                        max_ratio=1.10 if name == "ibi" else None,
                        note=None if name == "bare squashfs" else
                        f"{extra:+.2f} us per entry"))
                    rows.append(common.row(
                        f"{wl}, warm, CPU time", name, cpu[name], unit="s cpu",
                        baseline="bare squashfs", baseline_value=cbase,
                        note=f"{(cpu[name] - cbase) / entries * 1e6:+.2f} us per entry"))
                print(common.table(rows[-2 * len(med):]), flush=True)
        finally:
            for mp in [p for k, p in mnts.items() if k != "bare squashfs"]:
                subprocess.run(["umount", mp], check=False)
            subprocess.run(["umount", str(tm)], check=False)
    common.write("overlay", rows, {"tree": args.tree, "entries": entries,
                                   "rounds": args.rounds}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
