"""``ibi``: the command line over the engine. Every action the menu offers is here too."""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

from . import __version__, authcli, compactcli, importcli, prunecli, statecli, updatecli
from .engine import (
    DEFAULT_DATA,
    DEFAULT_RUN,
    RAM_CRITICAL,
    RAM_WARN,
    Engine,
    check_tries,
    human,
    tmpfs_uppers,
)
from .errors import IbiError, NotFound, Refused, UsageError
from .model import Kind, LayerStats, Level, Progress, StatePlan, Status
from .output import emit
from .squash import COMPRESSORS

log = logging.getLogger("ibi")

DESCRIPTION = """\
ibi keeps a machine's root as a stack of read-only squashfs images joined by kernel
overlayfs under one writable layer on a data partition. /home and the image store live
outside the union. Restore System throws the writable layer away; restore points squash
it (incremental) or the whole system (full) into a new image; Live Review boots any
older restore point on a throw-away tmpfs.
"""

EPILOG = """\
store layout (see docs/FORMAT.md):
  DATA/.root_images/roottab     the active stack, bottom first (editable with vi)
  DATA/.root_images/NAME.sqfs   images, each with NAME.yaml metadata
  DATA/layer/                   the writable layer;  DATA/home/  bound on /home
  DATA/state/                   the managed config: state.yaml and its captures

exit status: 0 success; 1 the action failed; 2 bad usage; 3 a check found problems
(status with errors, verify with a bad image); 130 interrupted.

examples:
  ibi init --data /mnt/data --from /srv/rootfs
  ibi status --data /mnt/data
  ibi create --data /mnt/data --incremental -m "before the driver upgrade"
  ibi review --data /mnt/data base /mnt/review
  ibi restore --data /mnt/data --yes
"""


def _common(json_out: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--data", metavar="DIR", default=None,
                   help=f"the data partition's mount point (default: $IBI_DATA or {DEFAULT_DATA}"
                   "; for demo: ./demo)")
    p.add_argument("--run-dir", metavar="DIR", default=os.environ.get("IBI_RUN", DEFAULT_RUN),
                   help=f"where stacks are staged (default: {DEFAULT_RUN})")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.add_argument("--debug", action="store_true", help="log every command run; tracebacks")
    if json_out:
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def _compress_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compressor", choices=COMPRESSORS, default="zstd",
                   help="squashfs compressor (default: zstd)")
    p.add_argument("--level", type=int, default=None,
                   help="compression level (default: zstd 3, gzip 6)")


def _restore_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")
    p.add_argument("--next-boot", action="store_true",
                   help="queue it for the next boot (for a running system)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be discarded and written; change nothing")
    p.add_argument("--keep-current", action="append", default=[], metavar="CHOICE",
                   help="keep this managed config's current value instead of the captured "
                        "one: a registry operator (hostname) or a stash path; repeatable")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    top = argparse.ArgumentParser(prog="ibi", description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=fmt)
    top.add_argument("--version", action="version", version=f"ibi {__version__}")
    sub = top.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def add(name: str, help: str, desc: str, json_out: bool = False) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=textwrap.dedent(desc),
                              parents=[_common(json_out)], formatter_class=fmt)

    p = add("init", "create a store with a base image", """\
        Create a new store in DATA whose stack is one base image, squashed from a
        directory tree (--from; its /home contents are left out) or copied from an
        existing squashfs file (--image).""", True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--from", dest="source_dir", metavar="DIR", help="squash this tree")
    src.add_argument("--image", metavar="FILE", help="copy this squashfs image in")
    p.add_argument("--name", default="base", help="the base image's name (default: base)")
    p.add_argument("-m", "--description", default="", help="a description to keep with it")
    _compress_opts(p)

    add("status", "show the stack, the writable layer and disk use", """\
        Show the image stack bottom first (name, kind, created, size, whether it sits on
        the stack it was made on, the kernels it boots, the first one booted), the
        writable layer (what Restore System would discard, and a kernel installed in it),
        the kernel the next boot uses, the data partition's use, RAM where a tmpfs upper
        is in play, and warnings. Exits 3 when something is wrong with the stack.""", True)

    p = add("changes", "list what the writable layer changes", """\
        List each path the writable layer adds or changes, deletes (whiteouts) or makes
        opaque: exactly what Restore System would discard.""", True)
    p.add_argument("--limit", type=int, default=None, help="list at most N paths")

    p = add("mount", "assemble the root stack on a directory", """\
        Loop-mount each image of roottab read-only, join them with kernel overlayfs under
        the writable layer on TARGET, and bind DATA/home on TARGET/home. With --fallback,
        an unusable roottab (unreadable, or naming a missing image) gives way to
        roottab.prev. ibi umount TARGET takes it all down.""", True)
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--fallback", action="store_true", help="fall back to roottab.prev")
    p.add_argument("--read-only", action="store_true", help="no writable layer")

    p = add("umount", "take down a stack mounted by mount or review", """\
        Unmount the overlay on TARGET, its /home bind and every image mounted for it,
        newest first; loop devices are released.""")
    p.add_argument("target", metavar="TARGET")

    p = add("review", "Live Review: mount an older restore point on a tmpfs", """\
        Mount the stack only up to image NAME on TARGET with a fresh tmpfs as the
        writable layer and /home bound on top. Nothing written there is kept; the store
        is not changed.""", True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--size", default=None, metavar="SIZE",
                   help="the tmpfs's size: N%% of the RAM (1-90) or a size like 512M or 2G "
                        "(default: half of the RAM available now; never under 64M)")

    p = add("watch-ram", "warn when an overlay kept in RAM fills up", """\
        Check every RAM file system (tmpfs) that an overlay writes to — a Live Review's
        upper, above all — and warn on the console and in the journal when one is 80 %
        full and again at 95 %: when it is full, every write fails (ENOSPC) and what was
        written there is gone at the next boot anyway. With --interval, keep watching
        (ibi-ram-watch.service does this in a Live Review); else check once and exit 1
        if one is 95 % full or more.""", True)
    p.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                   help="check again every SECONDS (at least 1) until stopped")

    p = add("create", "make a restore point", """\
        --incremental squashes the writable layer alone (deletions and opaque
        directories kept) into a new image stacked on top. --full squashes the whole
        system (the union, minus /home) into one image that becomes the stack alone;
        older images are kept. Either way the writable layer is then cleared. Refuses,
        with the figures, when the data partition may not have room.""", True)
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument("--incremental", action="store_const", dest="kind", const=Kind.INCREMENTAL)
    kind.add_argument("--full", action="store_const", dest="kind", const=Kind.FULL)
    p.add_argument("--name", default=None, help="image name (default: a UTC timestamp)")
    p.add_argument("-m", "--description", default="", help="a description to keep with it")
    p.add_argument("--next-boot", action="store_true",
                   help="queue it for the next boot (for a running system)")
    _compress_opts(p)

    p = add("restore", "Restore System: discard the writable layer", """\
        Set the writable layer aside (a rename: instant whatever its size) and start a
        fresh one, so the machine is back at its last restore point. Kept: /home, every
        image. The managed config (ibi state: hostname, timezone, SSH host keys, ...) is
        written into the fresh layer from the last capture, not from the layer being
        discarded; --dry-run shows, per path, the value now and the value written. The
        old layer waits in DATA/trash until ibi purge. Asks for confirmation unless
        --yes.

        --undo puts back the layer the last Restore System, Roll back, Switch or
        automatic fallback set aside (while it is in DATA/trash), with the stack it was
        used on; the current layer is set aside in turn, so an undo can be undone.""", True)
    _restore_opts(p)
    p.add_argument("--undo", action="store_true",
                   help="put back the layer the last restore, roll back or switch set aside")

    p = add("rollback", "make the stack end at an older restore point", """\
        Make roottab end at image NAME (permanent until the next change; newer images are
        kept so you can roll forward again with the same command). The writable layer is
        set aside as for restore (ibi restore --undo puts it back), and the managed config
        written from the last capture. The next boot uses NAME's kernel. The stack is on
        trial until a boot of it completes (see ibi switch). Asks for confirmation unless
        --yes.""", True)
    p.add_argument("name", metavar="NAME")
    _restore_opts(p)
    updatecli.tries_arg(p)
    updatecli.add_parser(add, _restore_opts)

    p = add("delete", "delete a restore point", """\
        Delete image NAME and its metadata. Refused when it is in the active stack, in
        roottab.prev, needed by another image, or mounted. Asks unless --yes.""", True)
    p.add_argument("name", metavar="NAME")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = add("verify", "check image checksums and metadata", """\
        Compute the sha256 of every image in the stack (--all: in the store) and compare
        it and the size with the metadata; check that parents exist. Exits 3 on any
        problem.""", True)
    p.add_argument("--all", action="store_true", help="every image in the store")

    add("recover", "finish or undo an interrupted action", """\
        Every action runs this first. It removes unfinished temporary files, puts a
        prepared fresh layer in place, and finishes a restore point whose image was
        written but whose layer was not yet cleared.""", True)

    p = add("pending", "show, run or cancel the action queued for the next boot", """\
        A running system cannot discard or squash the writable layer it is using, so
        restore, rollback and create --incremental/--full with --next-boot queue the
        action in
        .root_images/pending; the boot path runs it (--run) before it assembles the
        root.""", True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--run", action="store_true", help="carry out the queued action now")
    g.add_argument("--cancel", action="store_true", help="forget the queued action")

    p = add("purge", "delete set-aside writable layers", """\
        Delete the layers that Restore System and Roll back set aside in DATA/trash: the
        last copy of what those layers held. Asks for confirmation unless --yes.""",
        True)
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    add("reclaim", "delete the writable layers restore points cleared", """\
        Delete the writable layers that restore points cleared (their content is in the
        new image): ibi create sets the layer aside and returns, and starts this in the
        background at idle priority; ibi-reclaim.service runs it after a boot (a restore
        point made in the initramfs), and an action short of space runs it first. Safe to
        run at any time, also while it runs elsewhere.""", True)

    statecli.add_parser(add)
    authcli.add_parser(add)
    prunecli.add_parser(add)
    importcli.add_parser(add)
    compactcli.add_parser(add, _compress_opts)

    p = add("boot-entries", "show or renew the boot plan and GRUB's menu", """\
        Show the boot plan: for the normal boot, its fallback, the maintenance menu and
        each Live Review, the images the initramfs mounts (bottom first), and the kernel
        each entry boots. The engine writes it (DATA/.root_images/bootplan) whenever
        roottab or the images change, and on a machine set up by ibi install also GRUB's
        menu (DATA/boot/grub/grub.cfg). --write renews both now; run in the system
        booted from the stack (as the kernel packages' hook does), it first keeps a
        kernel installed there (DATA/boot/kernels/) so that the next boot uses it.""",
        True)
    p.add_argument("--write", action="store_true", help="renew the plan and GRUB's menu")

    p = add("install", "turn this Debian system into an ibi system", """\
        Make DEVICE (an empty partition, or a whole disk to partition) the data
        partition of this machine: format it (ext4, label ibidata), squash the running
        root file system into the base image, copy /home onto it, build an initramfs with
        the ibi module, and install GRUB so that the ibi stack boots by default, with
        Maintenance Mode, a Live Review of each restore point and the original system
        in its menu. The original root file system is not changed and stays bootable.
        Refused when not root, not Debian-like, / is already an ibi stack, DEVICE is in
        use, holds data (unless --force) or is too small. Asks you to type the device's
        name unless --yes.

        examples:
          ibi install --dry-run /dev/sdb1    print what would be done, change nothing
          ibi install /dev/sdb1""", True)
    p.add_argument("device", metavar="DEVICE")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--force", action="store_true",
                   help="erase DEVICE even if it holds a file system or partition table")
    p.add_argument("--label", default="ibidata", help="the data partition's label")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask")

    p = add("menu", "open the maintenance menu", """\
        Open the text-mode maintenance menu (urwid) on this terminal: runs ibi-menu
        (the menu's own command), passing the extra options on; see ibi-menu --help.""")

    p = add("demo", "build a demo store and show it", """\
        Build a small demo root tree, make a store from it in DATA (default ./demo),
        create an incremental restore point, print the status, and open the menu when
        on a terminal.""", True)
    p.add_argument("--no-menu", action="store_true", help="do not open the menu")
    return top


# ---------------------------------------------------------------------- output

class Reporter:
    """Progress on stderr: a live line on a terminal, phase changes otherwise. A report
    without a known total (a step of a longer action) is a line of its own."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.phase = ""
        self.live = False  # a \r-updated line is open on the terminal

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        frac = p.fraction
        if self.tty and frac is not None:
            sys.stderr.write(f"\r{p.phase:>10} {frac * 100:5.1f}% {p.message[:50]:<50}")
            self.live = frac < 1.0
            if not self.live:
                sys.stderr.write("\n")
        elif p.phase != self.phase:
            if self.live:
                sys.stderr.write("\n")
                self.live = False
            sys.stderr.write(f"{p.phase} {p.message}\n")
        sys.stderr.flush()
        self.phase = p.phase


def print_status(s: Status) -> None:
    print(f"ibi store in {s.data_dir}")
    print("Stack (bottom first):")
    for i, e in enumerate(s.stack, 1):
        when = e.created.strftime("%Y-%m-%d %H:%M") if e.created else "?"
        mark = "ok" if e.chain_ok and e.present else "BROKEN"
        kind = e.kind.value if e.kind else "?"
        print(f"  {i:>2}  {e.name:<24} {kind:<11} {when}  {human(e.size):>10}  {mark}"
              + ("  pinned" if e.name in s.pinned else "")
              + (f"  {e.description}" if e.description else ""))
        print_kernels(e.kernels)
    if s.layer:
        ly = s.layer
        print(f"  --  writable layer: {human(ly.bytes)}, {ly.changed} changed, "
              f"{ly.deleted} deleted, {ly.opaque} opaque dirs")
        if s.layer_kernels:
            print("        kernel installed in the layer (Restore System discards it): "
                  + ", ".join(s.layer_kernels))
    if s.other_images:
        print("Other restore points (not in the stack):")
        for e in s.other_images:
            when = e.created.strftime("%Y-%m-%d %H:%M") if e.created else "?"
            kind = e.kind.value if e.kind else "?"
            print(f"      {e.name:<24} {kind:<11} {when}  {human(e.size):>10}"
                  + ("  pinned" if e.name in s.pinned else ""))
            print_kernels(e.kernels)
    if s.boot_kernel:
        print(f"Next boot: Linux {s.boot_kernel}")
    d = s.disk
    print(f"Data partition: {human(d.used)} used, {human(d.free)} free of {human(d.total)} "
          f"(images {human(d.store)}, layer {human(d.layer)}, trash {human(d.trash)})")
    print(f"RAM: {human(s.ram.available)} available of {human(s.ram.total)}")
    for t in s.ram.tmpfs:
        print(f"  tmpfs {t.mountpoint}: {human(t.used)} of {human(t.total)} "
              f"({t.fraction:.0%} full)" + (f", the upper of {t.serves}" if t.serves else ""))
    for n in s.notices:
        tag = {Level.ERROR: "error", Level.WARNING: "warning", Level.INFO: "note"}[n.level]
        print(f"{tag}: {n.message}")


def watch_ram(args: argparse.Namespace) -> int:
    """``ibi watch-ram``: the fill level of every RAM overlay; with --interval, a warning
    on the console and in the journal (stderr) each time one crosses 80 % or 95 %."""
    if args.interval is not None and not 1 <= args.interval <= 86400:
        raise UsageError("--interval is 1 to 86400 seconds")
    said: dict[str, int] = {}
    while True:
        uses = tmpfs_uppers()
        worst = 0
        for t in uses:
            level = 2 if t.fraction >= RAM_CRITICAL else 1 if t.fraction >= RAM_WARN else 0
            worst = max(worst, level)
            if level > said.get(t.mountpoint, 0):
                line = (f"ibi: {'CRITICAL' if level == 2 else 'warning'}: the RAM overlay "
                        f"{t.mountpoint}{f' (upper of {t.serves})' if t.serves else ''} is "
                        f"{t.fraction:.0%} full ({human(t.used)} of {human(t.total)})"
                        + ("; writes fail when it is full" if level == 2 else ""))
                print(line, file=sys.stderr, flush=True)
                if args.interval is not None:
                    with contextlib.suppress(OSError), open("/dev/console", "w") as con:
                        con.write(line + "\n")
            said[t.mountpoint] = level if level else 0  # falls back: warn again later
        if args.interval is None:
            text = "\n".join(f"{t.mountpoint}: {t.fraction:.0%} full ({human(t.used)} of "
                             f"{human(t.total)})" for t in uses) or "no overlay writes to RAM"
            emit(args, uses, functools.partial(print, text))
            return 1 if worst == 2 else 0
        time.sleep(args.interval)


def print_kernels(versions: Sequence[str]) -> None:
    if versions:
        more = f" (also {', '.join(versions[1:])})" if versions[1:] else ""
        print(f"        kernel {versions[0]}{more}")


def confirm(args: argparse.Namespace, word: str, explanation: str) -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise Refused(f"{args.cmd} needs confirmation: add --yes")
    print(explanation)
    answer = input(f"Type {word} to go on, anything else to cancel: ")
    if answer.strip() != word:
        raise Refused("cancelled; nothing was changed")


def restore_explanation(engine: Engine, what: str, plan: StatePlan,
                        stats: LayerStats | None = None) -> str:
    stats = stats or engine.restore_plan()
    lines = [f"{what} discards the writable layer: {stats.changed} changed files, "
             f"{stats.deleted} deletions, {stats.opaque} replaced directories "
             f"({human(stats.bytes)})."]
    sample = engine.changes(limit=10)
    lines += [f"    {c.what:<8} {c.path}" for c in sample]
    if stats.changed + stats.deleted + stats.opaque > len(sample):
        lines.append("    ... (ibi changes lists them all)")
    lines.append("Kept: /home, every image.")
    lines += statecli.plan_lines(plan)
    return "\n".join(lines)


def undo(eng: Engine, args: argparse.Namespace) -> int:
    """ibi restore --undo: show (--dry-run), confirm, do or queue."""
    plan = eng.undo_plan()
    if plan is None:
        raise NotFound("no set-aside writable layer to put back (none was set aside, or "
                       "ibi purge deleted them)")
    entry, stack, stats = plan
    now = eng.restore_plan()
    text = (f"Undo puts back the writable layer set aside in {entry} ({stats.changed} "
            f"changed files, {human(stats.bytes)}) with its stack [{' '.join(stack)}].\n"
            f"The current layer ({now.changed} changed files, {human(now.bytes)}) is set "
            "aside in turn: undo again to get it back.")
    if args.dry_run:
        emit(args, {"put_back": entry, "stack": stack, "layer": stats},
             lambda: print(text + "\n(--dry-run: nothing was changed)"))
        return 0
    confirm(args, "UNDO", text)
    if args.next_boot:
        eng.queue("undo")
        print("the undo will run at the next boot")
        return 0
    res = eng.undo()
    emit(args, res, lambda: print(
        f"put back {res.put_back}: the stack is [{' '.join(res.stack)}]; the layer it "
        f"replaced is in trash/{res.set_aside} (ibi restore --undo again to swap back)"))
    return 0


def restore_like(eng: Engine, args: argparse.Namespace, name: str | None) -> int:
    """ibi restore, ibi rollback and ibi switch: show (--dry-run), confirm, do or queue."""
    switch = args.cmd == "switch"
    what, word = ("Restore System", "RESTORE") if name is None else \
        ("Switch", "SWITCH") if switch else ("Roll back", "ROLLBACK")
    plan = eng.state_plan(name, args.keep_current)
    head = "" if name is None else f"The stack becomes: {' '.join(eng.stack_for(name))}.\n"
    if args.dry_run:
        now = eng.restore_plan()
        emit(args, {"discard": now, "state": plan}, lambda: print(
            head + restore_explanation(eng, what, plan, now)))
        return 0
    # the figures shown are the figures reported (with --yes they are counted after)
    stats: LayerStats | None = None if args.yes else eng.restore_plan()
    if stats is not None:
        confirm(args, word, head + restore_explanation(eng, what, plan, stats))
    action = "restore" if name is None else "rollback"
    if args.next_boot:
        eng.queue(action, name=name, keep=args.keep_current,
                  reason="switch" if switch else None, tries=eng.trial_tries)
        print(f"{what} will run at the next boot")
        return 0
    if name is not None:
        stack = eng.rollback(name, args.keep_current,
                             reason="switch" if switch else "rollback")
        t = eng.trial()
        emit(args, {"stack": stack, "trial": t}, lambda: print(
            f"stack is now: {' '.join(stack)}" + (
                f"\non trial: {t.tries} boots to complete one, else back to "
                f"[{' '.join(t.good)}]" if t else "")))
        return 0
    res = eng.restore(args.keep_current, stats)

    def text() -> None:
        print(f"restored: discarded {res.discarded.changed} changed files and "
              f"{res.discarded.deleted} deletions ({human(res.discarded.bytes)})")
        if res.written:
            print(f"  written from the last capture: {', '.join(res.written)}")
        if res.kept_current:
            print(f"  kept as they were: {', '.join(res.kept_current)}")
        for w in res.warnings:
            print(f"ibi: warning: {w}", file=sys.stderr)
    emit(args, res, text)
    return 0


# ---------------------------------------------------------------------- commands

def run_command(args: argparse.Namespace) -> int:
    default = "demo" if args.cmd == "demo" else DEFAULT_DATA
    args.data = os.path.abspath(args.data or os.environ.get("IBI_DATA") or default)
    eng = Engine(args.data, args.run_dir)
    rep = Reporter(args.quiet or getattr(args, "json", False))
    cmd = args.cmd
    if cmd == "init":
        meta = eng.init(source_dir=args.source_dir, image=args.image, name=args.name,
                        description=args.description, compressor=args.compressor,
                        level=args.level, progress=rep)
        emit(args, meta, lambda: print(f"created store in {eng.data_dir} with base image "
                                       f"{meta.name} ({human(meta.size)})"))
    elif cmd == "status":
        st = eng.status()
        emit(args, st, lambda: print_status(st))
        return 0 if st.ok else 3
    elif cmd == "changes":
        ch = eng.changes(args.limit)
        emit(args, ch, lambda: [print(f"{c.what:<8} {c.path}") for c in ch])
    elif cmd == "mount":
        r = eng.mount(args.target, fallback=args.fallback, readonly=args.read_only)
        emit(args, r, lambda: print(f"mounted [{' '.join(r.stack)}] on {r.target}"
                                    + (" (from roottab.prev)" if r.roottab != "roottab" else "")))
    elif cmd == "umount":
        n = eng.umount(args.target)
        print(f"unmounted {n} mounts") if not args.quiet else None
    elif cmd == "review":
        r = eng.review(args.name, args.target, tmpfs_size=args.size)
        emit(args, r, lambda: print(f"live review of [{' '.join(r.stack)}] on {r.target}; "
                                    "nothing written there is kept"))
    elif cmd == "create" and args.next_boot:
        eng.queue(args.kind.value, name=args.name, description=args.description)
        print(f"a {args.kind.value} restore point will be made at the next boot")
    elif cmd == "create":
        meta = eng.create(args.kind, name=args.name, description=args.description,
                          compressor=args.compressor, level=args.level, progress=rep)
        emit(args, meta, lambda: print(f"created {meta.kind.value} restore point {meta.name} "
                                       f"({human(meta.size)}); the writable layer is now empty"))
        eng.reclaim_later()  # the cleared layer's files
    elif cmd == "restore" and args.undo:
        return undo(eng, args)
    elif cmd == "restore":
        return restore_like(eng, args, None)
    elif cmd == "rollback":
        if args.tries is not None:
            eng.trial_tries = check_tries(args.tries)
        return restore_like(eng, args, args.name)
    elif cmd == "import":
        return importcli.run(eng, args, rep)
    elif cmd in ("pin", "unpin", "prune"):
        return prunecli.run(eng, args)
    elif cmd == "compact":
        return compactcli.run(eng, args, rep)
    elif cmd in ("switch", "boot-ok", "boot-failed", "boot-fallback"):
        return updatecli.run(eng, args, emit, restore_like)
    elif cmd == "state":
        return statecli.run(eng, args)
    elif cmd == "passwd":
        return authcli.run(eng, args)
    elif cmd == "delete":
        confirm(args, "DELETE", f"Image {args.name} will be deleted for good.")
        eng.delete(args.name)
        emit(args, {"deleted": args.name}, lambda: print(f"deleted {args.name}"))
    elif cmd == "verify":
        rep_ = eng.verify(all_images=args.all, progress=rep)
        emit(args, rep_, lambda: [print(f"{'ok ' if i.ok else 'BAD'}  {i.name}"
                                        + (f": {i.problem}" if i.problem else ""))
                                  for i in rep_.items])
        return 0 if rep_.ok else 3
    elif cmd == "recover":
        done = eng.recover()
        emit(args, {"done": done}, lambda: print("\n".join(done) or "nothing to recover"))
    elif cmd == "pending":
        if args.run:
            ran = eng.run_pending(progress=rep)
            emit(args, {"done": ran}, lambda: print(ran or "nothing queued"))
        elif args.cancel:
            had = eng.cancel_pending()
            emit(args, {"cancelled": had}, lambda: print("cancelled" if had else "nothing queued"))
        else:
            doc = eng.pending()
            emit(args, doc, lambda: print(" ".join(f"{k}={v}" for k, v in doc.items())
                                          if doc else "nothing queued"))
    elif cmd == "purge":
        held = eng.trash_bytes()
        if held:
            confirm(args, "PURGE", f"The set-aside layers in {eng.store.trash} "
                    f"({human(held)}) will be deleted for good.")
        freed = eng.purge()
        emit(args, {"freed": freed}, lambda: print(f"freed {human(freed)}"))
    elif cmd == "reclaim":
        freed = eng.reclaim()
        emit(args, {"freed": freed}, lambda: None if args.quiet
             else print(f"freed {human(freed)}"))
    elif cmd == "watch-ram":
        return watch_ram(args)
    elif cmd == "boot-entries":
        return boot_entries(eng, args)
    elif cmd == "install":
        return install_command(args, rep)
    elif cmd == "menu":
        return exec_menu(["--data", args.data, "--run-dir", args.run_dir, *args.menu_args])
    elif cmd == "demo":
        from .demo import run_demo

        return run_demo(eng, args, rep)
    return 0


def exec_menu(menu_args: list[str]) -> int:
    """Replace this process by the menu: ``ibi-menu`` beside this ``ibi`` (the package
    installs both in /usr/bin), else ``python3 -m screens`` (a source tree). The engine
    package never imports the menu (screens/ imports the engine, not the other way)."""
    here = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    menu = here / "ibi-menu" if here else None
    env = dict(os.environ)
    if menu is not None and os.access(menu, os.X_OK):
        argv = [str(menu), *menu_args]
    else:
        root = str(Path(__file__).resolve().parent.parent)  # where screens/ is too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        argv = [sys.executable, "-m", "screens", *menu_args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError as e:
        raise IbiError(f"the maintenance menu cannot be started ({argv[0]}: {e.strerror})",
                       hint="reinstall the ibi package") from None
    return 1  # not reached


def boot_entries(eng: Engine, args: argparse.Namespace) -> int:
    from . import bootloader, bootplan

    eng.store.require()
    warnings: list[str] = []
    if args.write:
        warnings = eng.sync_kernels()
    plan = bootplan.build(eng.store)
    current = bootplan.is_current(eng.store)
    grub = bootloader.cfg_path(eng.store) if eng.store.bootloader_conf.is_file() else None
    kmap = bootloader.entry_kernels(eng.store, plan)
    entries = {k: (v.version if v else None) for k, v in kmap.items()}
    for w in warnings:
        print(f"ibi: warning: {w}", file=sys.stderr)
    if args.quiet and not getattr(args, "json", False):  # the kernel hook: one line
        if args.write and entries.get("ibi"):
            print(f"ibi: boot entries renewed; the next boot uses Linux {entries['ibi']}")
        return 0 if current else 3

    def text() -> None:
        print(bootplan.render(plan), end="")
        if not current:
            print("note: the boot plan on disk is out of date (ibi boot-entries --write)")
        print("Kernels:")
        for key, version in entries.items():
            what = {"ibi": "normal boot", "ibi-maintenance": "Maintenance Mode"}.get(
                key, key.replace("review:", "Live Review of "))
            print(f"  {what}: " + (f"Linux {version}" if version else
                                   "the kernel ibi install set up" if grub else "none kept"))
        if grub:
            print(f"GRUB's menu: {grub}")

    emit(args, {"plan": plan, "current": current, "kernels": entries,
                "grub_cfg": str(grub) if grub else None}, text)
    return 0 if current else 3


def install_command(args: argparse.Namespace, rep: Reporter) -> int:
    from . import install

    plan = install.make_plan(args.device, label=args.label, force=args.force)
    if args.dry_run:
        emit(args, plan, lambda: print("\n".join(install.describe(plan))
                                       + "\n(--dry-run: nothing was changed)"))
        return 0
    confirm(args, plan.device, "\n".join(install.describe(plan)))
    eng = install.install(plan, run_dir=Path(args.run_dir), progress=rep)
    emit(args, {"installed": plan.device, "data": str(eng.data_dir)}, lambda: print(
        f"ibi is installed on {plan.device}; reboot to start the image stack. The original "
        f"system on {plan.root_source} is unchanged"
        + (" and stays in the boot menu." if plan.original else ".")))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.cmd != "menu":
        parser.parse_args(argv)  # reports the unknown arguments and exits 2
    args.menu_args = extra
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="ibi: %(levelname)s: %(message)s")
    try:
        return run_command(args)
    except IbiError as e:
        print(f"ibi: error: {e}", file=sys.stderr)
        if e.hint:
            print(f"ibi: hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ibi: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        if args.debug:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"ibi: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
