"""``ibi import``: add a root image built elsewhere to the store (maintenance/imports.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from .engine import Engine
from .model import ProgressFn
from .output import emit
from .status import human

Add = Callable[..., argparse.ArgumentParser]


def add_parser(add: Add) -> None:
    p = add("import", "add a root image built elsewhere to the store", """\
        Add a squashfs image of a whole root file system, built elsewhere, to the store
        as a full image: one made by mkosi, by mmdebstrap and mksquashfs, or another ibi
        machine's full restore point (its DATA/.root_images/NAME.sqfs). SRC is a file, -
        for standard input, or an http:// or https:// URL (downloaded directly into the
        store; a stall of 60 s ends it).

        The image is checked before anything is kept: a squashfs 4.0 image, not
        truncated; the SHA-256 given with --sha256, and, for a file NAME.sqfs with an ibi
        NAME.yaml beside it (copied from another ibi machine), the size and SHA-256 that
        metadata records (an incremental restore point is refused: it works only on its
        own stack); mounted read-only, a root tree with /usr and /etc directories. A
        failed check says why in one line and leaves the store exactly as it was. It
        warns when the image has no /usr/bin/ibi (the maintenance menu cannot run from
        it alone) or no kernel ibi can boot (boot/vmlinuz-V, boot/initrd.img-V and
        usr/lib/modules/V: booting it then takes another system's kernel).

        Its kernels are kept in DATA/boot/kernels/ as for ibi init, its metadata is
        written (kind full; created now; description: -m, else where it came from) and
        the boot plan renewed, so the image has a Live Review in the boot menu. Nothing
        else changes: roottab, the writable layer and the other images stay as they are.
        ibi switch NAME then makes it the active stack (on trial until a boot of it
        completes). A crash or power cut leaves the store as it was (recovery removes
        the unfinished copy) or with the image imported.

        NAME defaults to the file's name without .sqfs when that is a valid image name
        no image or stack uses, else (and for standard input and URLs) to a UTC
        timestamp, YYYYMMDD-HHMMSS-import. The data partition must hold the image plus
        16 MiB; a stream of unknown size is stopped before it gets that full.

        exit status: 0 imported; 1 a check failed, the source cannot be read, no space;
        2 bad usage (a bad name, one in use, a malformed --sha256).

        examples:
          ibi import --image debian-13.sqfs --name trixie -m "Debian 13, mkosi"
          ssh build cat out/image.sqfs | ibi import --image - --name nightly
          ibi import --image https://build.example/web-42.sqfs \\
              --sha256 "$(curl -fsS https://build.example/web-42.sqfs.sha256)"
          ibi import --image /mnt/usb/20261122-101500-full.sqfs   (checked against
              the 20261122-101500-full.yaml beside it)
          ibi switch trixie --next-boot && reboot""", True)
    p.add_argument("--image", required=True, metavar="SRC",
                   help="the squashfs image: a file, - for standard input, or an "
                        "http(s) URL")
    p.add_argument("--name", default=None,
                   help="the image's name (default: the file's name, else "
                        "YYYYMMDD-HHMMSS-import)")
    p.add_argument("-m", "--description", default="",
                   help="a description to keep with it (default: where it came from)")
    p.add_argument("--sha256", default=None, metavar="HEX",
                   help="the SHA-256 the image must have (as sha256sum prints it; "
                        "a file name after it is ignored)")


def run(eng: Engine, args: argparse.Namespace, rep: ProgressFn | None = None) -> int:
    meta = eng.import_image(args.image, name=args.name, description=args.description,
                            sha256=args.sha256, progress=rep)
    emit(args, meta, lambda: print(
        f"imported {meta.name} ({human(meta.size)}, sha256 {meta.sha256}): "
        f"ibi switch {meta.name} makes it the active stack"))
    return 0


