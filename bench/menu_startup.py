#!/usr/bin/env python3
"""How long the maintenance menu takes from process start to its first full screen.

Runs ``python -m screens`` in an 80x24 pseudo-terminal (pexpect), reads the screen through
pyte and stops the clock when the whole main screen is drawn (the stack, the actions and the
help line). The baseline, measured in the same run on the same machine, is the bare cost of
starting Python and importing urwid as the menu does (without the optional event loop
libraries: ``screens.lean_urwid()``); the ratio says what the menu adds on top of it.

    python3 bench/menu_startup.py [--data DIR] [--points 100] [--runs N] [--json F]
                                  [--python PY ...]

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


def time_menu(data: Path, tmp: Path, py: list[str], env: dict[str, str]) -> float:
    import pexpect
    import pyte

    screen = pyte.Screen(80, 24)
    stream = pyte.ByteStream(screen)
    env = {**env, "TERM": "linux"}
    t0 = time.perf_counter()
    child = pexpect.spawn(py[0], [*py[1:], "-m", "screens", "--data", str(data), "--run-dir",
                                  str(tmp / "run"), "--decision", str(tmp / "decision")],
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


def time_cmd(code: str, py: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([*py, "-c", code], check=True, stdin=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="an existing store's data directory")
    p.add_argument("--points", type=int, default=100,
                   help="restore points in the store it builds (default 100)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--python", action="append", metavar="PY",
                   help="a Python to run the menu with (repeat to compare, e.g. a venv "
                   "with urwid 2.6, Debian 13's); default: this one")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="default: bench/results/menu.json")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ibi-bench-") as tmpdir:
        tmp = Path(tmpdir)
        if args.data:
            data, what = args.data, f"the store in {args.data}"
        else:
            data, what = build_store(tmp, args.points)
        rows = []
        for python in args.python or [sys.executable]:
            py, env = common.plain_python(REPO, python)
            version = subprocess.run([*py, "-c", "import urwid; print(urwid.__version__)"],
                                     env=env, capture_output=True, text=True,
                                     check=True).stdout.strip()
            time_menu(data, tmp, py, env)  # warm the page cache and .pyc files
            menu, base, bare = [], [], []
            for _ in range(args.runs):  # interleaved: a slow moment falls on all three
                menu.append(time_menu(data, tmp, py, env))
                base.append(time_cmd(LEAN_URWID, py, env))
                bare.append(time_cmd("pass", py, env))
            m, b, n = (statistics.median(x) for x in (menu, base, bare))
            print(f"menu startup on {what}, 80x24, urwid {version}, {args.runs} runs "
                  f"({python} -S: none of this environment's start-up hooks, as a packaged "
                  "ibi starts)")
            print(f"  first full screen:        median {m * 1000:6.0f} ms "
                  f"(min {min(menu) * 1000:.0f}, max {max(menu) * 1000:.0f})")
            print(f"  baseline python+urwid:    median {b * 1000:6.0f} ms")
            print(f"  bare python -c pass:      median {n * 1000:6.0f} ms")
            print(f"  ratio menu / baseline:    {m / b:.2f}x", flush=True)
            case = f"menu to its first full screen (80x24), urwid {version}"
            rows += [common.row(case, "python3 -m screens", m,
                                baseline="python3 + import urwid", baseline_value=b,
                                target="< 250 ms", max_value=0.25, note=what),
                     common.row(case, "python3 -c pass", n, note="starting Python alone")]
    common.write("menu", rows, {"runs": args.runs, "points": args.points,
                                "pythons": args.python or [sys.executable]}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
