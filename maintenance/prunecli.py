"""``ibi pin``, ``ibi unpin`` and ``ibi prune``: pins and the retention policy
(maintenance/retention.py) on the command line."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from . import retention
from .engine import Engine
from .errors import UsageError
from .model import to_jsonable
from .output import emit
from .retention import PruneItem, PrunePlan
from .status import human

Add = Callable[..., argparse.ArgumentParser]

POLICY_TEXT = """\
        The retention policy is set in DATA/.root_images/policy (every key
        optional; see docs/FORMAT.md):
          keep_last: 5     keep the 5 newest restore points (by creation time)
          keep_days: 30    keep every restore point younger than 30 days"""


def add_parser(add: Add) -> None:
    for cmd, what in (("pin", "pin"), ("unpin", "unpin")):
        p = add(cmd, f"{what} a restore point: "
                + ("ibi prune and ibi delete keep it" if cmd == "pin"
                   else "ibi prune may delete it again"), f"""\
        {'Pin' if cmd == 'pin' else 'Unpin'} each image NAME. A pinned image is kept
        whatever the retention policy says: ibi prune never deletes it and ibi delete
        refuses it until it is unpinned. Pins are kept in the image's metadata
        (pinned: true in DATA/.root_images/NAME.yaml); ibi status lists them. Pinning a
        pinned image (or unpinning one that is not) changes nothing.

        exit status: 0 done; 1 failed (no such image, unreadable metadata, the store is
        busy); 2 bad usage (a bad image name).

        examples:
          ibi pin before-upgrade           keep this restore point for good
          ibi unpin before-upgrade         let the retention policy decide again""",
                True)
        p.add_argument("names", nargs="+", metavar="NAME", help="an image in the store")

    p = add("prune", "delete the restore points the retention policy does not keep", f"""\
        Delete the restore points that the retention policy no longer keeps, to free
        space on the data partition. Kept, whatever the policy says:
          - pinned images (ibi pin), and the base image made by ibi init
          - the active stack (roottab) and the boot fallback (roottab.prev)
          - the last good stack while a new one is on trial (boot counting)
          - the stack of a roll back queued for the next boot
          - images mounted (a Live Review)
          - every image a kept incremental restore point sits on
          - images whose metadata cannot be read (ibi delete removes them)
        and, by the policy, the newest restore points and the young ones.

{POLICY_TEXT}

        --keep-last and --keep-days override the file for this run (0: keep none by that
        rule). Images are deleted one at a time, an incremental before the images below
        it, each as ibi delete does it (checked again, the boot plan and GRUB's menu
        renewed, kernels no image boots any more deleted); the first failure stops the
        prune and says what was deleted. Without --yes, the images to delete are listed
        with their sizes and why, and you are asked to type PRUNE. The set-aside writable
        layers are not touched: ibi purge deletes them.

        exit status: 0 done (also when nothing is to be deleted); 1 failed or not
        confirmed; 2 bad usage (a negative count).

        examples:
          ibi prune --dry-run              what would be deleted and kept, and why
          ibi prune --keep-last 3 --yes    keep only the 3 newest (and what must stay)
          ibi prune --dry-run --json""", True)
    p.add_argument("--dry-run", action="store_true",
                   help="list what would be deleted and kept, and why; change nothing")
    p.add_argument("--keep-last", type=int, default=None, metavar="N",
                   help="keep the N newest restore points (default: policy's, or 5)")
    p.add_argument("--keep-days", type=int, default=None, metavar="DAYS",
                   help="keep every restore point younger than DAYS days (default: "
                        "policy's, or 30)")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")


def run(eng: Engine, args: argparse.Namespace) -> int:
    if args.cmd in ("pin", "unpin"):
        return pin(eng, args, args.cmd == "pin")
    return prune(eng, args)


def pin(eng: Engine, args: argparse.Namespace, pinned: bool) -> int:
    eng.store.require()
    out = []
    for name in dict.fromkeys(args.names):
        before = eng.store.try_meta(name)
        meta = eng.pin(name, pinned)
        out.append({"name": meta.name, "pinned": meta.pinned,
                    "changed": before is None or before.pinned != pinned})

    def text() -> None:
        for o in out:
            if not o["changed"]:
                print(f"{o['name']} was already {'pinned' if pinned else 'not pinned'}: "
                      "nothing changed")
            elif pinned:
                print(f"pinned {o['name']}: ibi prune and ibi delete keep it")
            else:
                print(f"unpinned {o['name']}: ibi prune may delete it when the retention "
                      "policy no longer keeps it")
    emit(args, out, text)
    return 0


def item_lines(items: tuple[PruneItem, ...]) -> list[str]:
    width = max((len(i.name) for i in items), default=0)
    return [f"  {i.name:<{width}}  {human(i.size):>10}  {i.reason}" for i in items]


def plan_text(p: PrunePlan, with_keep: bool) -> str:
    head = f"Retention policy: {retention.policy_text(p.keep_last, p.keep_days)}."
    if not p.delete:
        lines = [head, "Nothing to delete: every image is kept."]
    else:
        n = len(p.delete)
        lines = [head, f"To delete ({n} restore point{'s' if n != 1 else ''}, freeing "
                       f"{human(p.freed)}"
                       + (f" with {len(p.kernels)} kernel(s) only they boot" if p.kernels
                          else "") + "), in this order:"]
        lines += item_lines(p.delete)
    if with_keep and p.keep:
        lines.append("Kept:")
        lines += item_lines(p.keep)
    elif p.keep:
        lines.append(f"Kept: {len(p.keep)} images (ibi prune --dry-run says why).")
    return "\n".join(lines)


def prune(eng: Engine, args: argparse.Namespace) -> int:
    for value, opt in ((args.keep_last, "--keep-last"), (args.keep_days, "--keep-days")):
        if value is not None and value < 0:
            raise UsageError(f"{opt} must be 0 or more (not {value})")
    eng.store.require()
    policy = {"keep_last": args.keep_last, "keep_days": args.keep_days}
    if args.dry_run:
        p = retention.plan(eng, **policy)
        emit(args, {"dry_run": True, **to_jsonable(p)},
             lambda: print(plan_text(p, with_keep=True) + "\n(--dry-run: nothing was "
                           "deleted)"))
        return 0
    expect = None
    if not args.yes:
        p = retention.plan(eng, **policy)
        if not p.delete:
            emit(args, {"dry_run": False, **to_jsonable(p)},
                 lambda: print(plan_text(p, with_keep=False)))
            return 0
        from .output import confirm

        confirm(args, "PRUNE", plan_text(p, with_keep=False)
                + "\nThe images listed will be deleted for good.")
        expect = p.names
    # holds the store's lock for the plan and every delete (as Engine.prune); what was
    # confirmed is checked against the plan made under the lock
    done = retention.prune(eng, **policy, expect=expect)

    def text() -> None:
        if not done.delete:
            print("nothing to delete: every image is kept (ibi prune --dry-run says why)")
            return
        print(f"deleted {', '.join(done.names)}: freed {human(done.freed)}")
    emit(args, {"dry_run": False, **to_jsonable(done)}, text)
    return 0
