#!/usr/bin/env python3
"""How long ``ibi status --json`` takes as the store grows (run by hand, as root).

Builds a store with a small base and N incremental restore points (squashed the way
``ibi create --incremental`` squashes a layer), for each N in --points, and times
``ibi status --json`` as a new process (what a script pays), median of --runs, in rounds
interleaved with the baseline: ``python3 -c 'import maintenance.cli'`` (the cost of
starting Python and importing the engine, which no store size changes). Both start as a
packaged ibi does (``python3 -S``: none of this environment's start-up hooks).

    sudo python3 bench/status_bench.py [--points 1,10,60,100] [--runs 5] [--json F]

Target (issue 12): under 0.30 s with 100 restore points.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import common  # noqa: E402

from maintenance.engine import Engine  # noqa: E402


def runner(argv: list[str], env: dict[str, str]) -> Callable[[], object]:
    return lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True, env=env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", default="1,10,60,100")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="default: bench/results/status.json")
    ap.add_argument("--dir", default="/var/tmp")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts)", file=sys.stderr)
        return 2
    py, env = common.plain_python(REPO)
    base = runner([*py, "-c", "import maintenance.cli"], env)
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-status-") as tmp:
        root = Path(tmp)
        tree = root / "tree"
        (tree / "etc").mkdir(parents=True)
        (tree / "etc/hostname").write_text("bench\n")
        eng = Engine(root / "data", root / "run")
        eng.data_dir.mkdir()
        eng.init(source_dir=tree)
        for n in sorted(int(p) for p in args.points.split(",")):
            common.tiny_points(eng, root, n - (len(eng.roottab()) - 1))
            status = runner([*py, "-m", "maintenance.cli", "status", "--json", "--data",
                             str(eng.data_dir), "--run-dir", str(eng.run_dir)], env)
            med = common.paired({"status": status, "base": base}, args.runs)
            s, base_s = med["status"], med["base"]
            rows.append(common.row(
                f"ibi status --json, {n} restore points", "ibi status", s,
                baseline="python3 -c 'import maintenance.cli'", baseline_value=base_s,
                target="< 300 ms" if n >= 100 else None,
                max_value=0.3 if n >= 100 else None,
                note="a new process each time (what a script pays)"))
            print(f"{n:>4} restore points: ibi status --json {s:.3f} s "
                  f"({s / base_s:.2f}x the baseline; +{s - base_s:.3f} s)")
    print(common.table(rows))
    common.write("status", rows, {"points": args.points, "runs": args.runs}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
