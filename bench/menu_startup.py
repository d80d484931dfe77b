#!/usr/bin/env python3
"""How long the maintenance menu takes from process start to its first full screen.

Runs ``python -m screens`` in an 80x24 pseudo-terminal (pexpect), reads the screen through
pyte and stops the clock when the whole main screen is drawn (the stack, the actions and the
help line). The baseline, measured in the same run on the same machine, is the bare cost of
starting Python and importing urwid as the menu does (without the optional event loop
libraries: ``screens.lean_urwid()``); the ratio says what the menu adds on top of it.

    python3 bench/menu_startup.py [--data DIR] [--points 100] [--runs N] [--json F]

Without --data it builds a small store in a temporary directory (needs mksquashfs; as root
it is a real store made by the engine), or falls back to a missing store (the menu's error
screen) and says so.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

import common  # noqa: E402

LEAN_URWID = "import screens; screens.lean_urwid(); import urwid"


def build_store(root: Path, points: int) -> tuple[Path, str]:
    data = root / "data"
    data.mkdir()
    try:
        from maintenance.demo import build_tree
        from maintenance.engine import Engine

        tree = root / "tree"
        build_tree(tree)
        eng = Engine(data, root / "run")
        eng.init(source_dir=tree, description="bench base")
        common.tiny_points(eng, root, points)
        return data, f"a store of a base and {points} restore points built by the engine"
    except Exception as e:  # no mksquashfs, not root...
        return data, f"a missing store (could not build one: {e})"


def time_menu(data: Path, tmp: Path) -> float:
    import pexpect
    import pyte

    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    env = {"PATH": "/usr/bin:/bin", "TERM": "linux", "LANG": "C.UTF-8",
           "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    child = pexpect.spawn(sys.executable, ["-m", "screens", "--data", str(data), "--run-dir",
                                           str(tmp / "run"), "--decision",
                                           str(tmp / "decision")],
                          cwd=str(REPO), env=env, dimensions=(24, 80))
    try:
        while True:
            try:
                stream.feed(child.read_nonblocking(65536, timeout=10))
            except pexpect.TIMEOUT:
                raise SystemExit("the menu drew no full screen in 10 s") from None
            rows = screen.display
            if "Continue booting" in "\n".join(rows) and "?: help" in rows[-1] \
                    and "Shell" in "\n".join(rows):
                return time.perf_counter() - t0
    finally:
        child.terminate(force=True)


def time_cmd(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="an existing store's data directory")
    p.add_argument("--points", type=int, default=100,
                   help="restore points in the store it builds (default 100)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--json", default=None, metavar="FILE",
                   help="default: bench/results/menu.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ibi-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.data:
            data, what = args.data, f"the store in {args.data}"
        else:
            data, what = build_store(tmp, args.points)
        time_menu(data, tmp)  # warm the page cache and .pyc files
        menu, base, bare = [], [], []
        for _ in range(args.runs):  # interleaved: a slow moment falls on all three
            menu.append(time_menu(data, tmp))
            base.append(time_cmd([sys.executable, "-c", LEAN_URWID]))
            bare.append(time_cmd([sys.executable, "-c", "pass"]))
    m, b, n = (statistics.median(x) for x in (menu, base, bare))
    import urwid

    print(f"menu startup on {what}, 80x24, urwid {urwid.__version__}, {args.runs} runs")
    print(f"  first full screen:        median {m * 1000:6.0f} ms "
          f"(min {min(menu) * 1000:.0f}, max {max(menu) * 1000:.0f})")
    print(f"  baseline python+urwid:    median {b * 1000:6.0f} ms")
    print(f"  bare python -c pass:      median {n * 1000:6.0f} ms")
    print(f"  ratio menu / baseline:    {m / b:.2f}x")
    rows = [common.row("menu to its first full screen (80x24)", "python3 -m screens", m,
                       baseline="python3 + import urwid", baseline_value=b,
                       target="< 250 ms", max_value=0.25, note=what),
            common.row("menu to its first full screen (80x24)", "python3 -c pass", n,
                       note="starting Python alone")]
    common.write("menu", rows, {"runs": args.runs, "points": args.points,
                                "urwid": urwid.__version__}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
