"""``ibi compact``: merge a run of incremental restore points into one image
(maintenance/compact.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .engine import Engine
from .model import ProgressFn
from .output import emit
from .status import human

Add = Callable[..., argparse.ArgumentParser]


def add_parser(add: Add, compress_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    p = add("compact", "merge restore points into one image", """\
        Merge a run of incremental restore points at the top of the active stack into
        one incremental image: every restore point adds an overlayfs layer to each file
        lookup of the running system, and the boot path assembles at most as many as
        the kernel takes in one overlay (500 on Linux 6.8 and later, 88 before). By
        default the run is every incremental restore point above the bottom image (the
        base or a full restore point); --from A starts it at A. It always ends at the
        top of the stack: the images above a run record the images they were made on.

        The run's images are mounted read-only as the boot path mounts them; their
        union is squashed into one image, with a whiteout for each file of the images
        below that the run deleted (or hid under a directory it made again). Before
        anything changes, the new image is checked against the run file by file: the
        images below plus the new one must show the same entries, with the same type,
        mode, owner, times, size, link target, device number, extended attributes and
        bytes, in every directory the run touches. Then roottab becomes the images below
        the run plus the new one: the commit point, after which the next boot uses it.

        Nothing is lost: the writable layer is untouched (the system under it is the
        same), the run's images stay in the store (ibi prune or ibi delete removes them
        once they are not needed; roottab.prev still names them until the next change),
        and a stack on trial (ibi switch) stays on trial, its boots counted. A crash or
        power cut leaves the old stack or the new one; before the commit point the
        merged image may be left in the store, unused (ibi delete removes it). The data
        partition must hold about the run's images again (--dry-run shows the figure).

        exit status: 0 merged (or, with --dry-run, a run to merge); 1 failed (no space,
        the check found a difference, the store is busy); 2 bad usage (nothing to merge,
        a bad name, one in use, --from or --to not in the active stack).

        examples:
          ibi compact --dry-run            which restore points would merge, the space
          ibi compact -m "Nov updates"     merge every restore point above the base
          ibi compact --from 20261120-093000-inc --name since-nov-20""", True)
    p.add_argument("--from", dest="first", default=None, metavar="A",
                   help="the lowest restore point of the run (default: the lowest "
                        "incremental one in the active stack)")
    p.add_argument("--to", dest="last", default=None, metavar="B",
                   help="the highest one: the top of the active stack (the default)")
    p.add_argument("--name", default=None,
                   help="the merged image's name (default: YYYYMMDD-HHMMSS-compact)")
    p.add_argument("-m", "--description", default="",
                   help="a description to keep with it (default: the run it merges)")
    p.add_argument("--dry-run", action="store_true",
                   help="show the run, the depth before and after, the space; change nothing")
    compress_opts(p)


def run(eng: Engine, args: argparse.Namespace, rep: ProgressFn | None = None) -> int:
    plan = eng.compact_plan(args.first, args.last)
    depth = {"stack": plan.stack, "below": plan.below, "run": plan.run,
             "run_bytes": plan.run_bytes, "depth_before": len(plan.stack),
             "depth_after": plan.depth_after}
    run_text = f"{plan.run[0]}..{plan.run[-1]} ({len(plan.run)} restore points)"
    if args.dry_run:
        emit(args, depth, lambda: print(
            f"would merge {run_text}, {human(plan.run_bytes)}, into one image on "
            f"{' -> '.join(plan.below)}: the stack goes from {len(plan.stack)} images to "
            f"{plan.depth_after}; needs about {human(plan.run_bytes)} free"))
        return 0
    meta = eng.compact(first=args.first, last=args.last, name=args.name,
                       description=args.description, compressor=args.compressor,
                       level=args.level, progress=rep)
    emit(args, {**depth, "image": meta}, lambda: print(
        f"merged {run_text} into {meta.name} ({human(meta.size)}); the stack is now "
        f"{' -> '.join((*plan.below, meta.name))}; the merged images are kept "
        "(ibi prune)"))
    return 0
