"""``ibi``: the command line over the engine. Every action the menu offers is here too."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Sequence

from . import __version__, authcli, compactcli, importcli, prunecli, statecli, updatecli
from .commands import run_command
from .engine import DEFAULT_DATA, DEFAULT_RUN
from .errors import IbiError
from .model import Kind
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
