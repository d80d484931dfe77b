"""``ibi import``: add a root image built elsewhere (mkosi, mmdebstrap + mksquashfs, another
ibi machine's full restore point) to the store as a full image. Nothing else changes:
roottab, the writable layer and the other images stay as they are; ``ibi switch NAME``
then makes it the active stack.

The image arrives from a file, from standard input (``-``) or from an http(s) URL, and is
streamed into ``.root_images/.tmp-NAME.sqfs`` with its SHA-256 computed on the way (one
read of the source: maintenance/importsrc.py). Then it is checked, each check a one-line
error that leaves the store as it was: a squashfs superblock that is sane and not truncated
(``unsquashfs -s`` reads it), the digest the caller expects (``--sha256``, or the
``NAME.yaml`` an ibi machine keeps beside ``NAME.sqfs``), and, mounted read-only, a root
tree with ``/usr`` and ``/etc``. Its kernels are kept as ``ibi init`` keeps a base image's
(docs/FORMAT.md, "Kernels per restore point"). The commit is the engine's: the metadata,
then the image renamed into place; then the boot plan is renewed so that the image has its
Live Review and is a switch target.

Crash safety: before the commit only ``.tmp-`` files and unreferenced kernel copies exist,
which recovery and the kernels' clean-up remove. The metadata records ``source_layer:
imported`` (never a layer id: those are hexadecimal), so that recovery also removes
metadata whose image a power cut kept from being renamed in: it drops orphan metadata of
images that name a source, and keeps that of images it cannot tell were unfinished.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from . import kernels, squash
from .errors import (
    BadName,
    CommandError,
    IntegrityError,
    MountError,
    NotFound,
    StoreError,
    UsageError,
)
from .fsio import read_store_text
from .importsrc import Source, _receive, parse_source
from .model import ImageMeta, Kind, ProgressFn
from .records import IMAGE_EXT, META_EXT, check_name, meta_from_yaml, utcnow

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger(__name__)

IMPORTED = "imported"  # source_layer of an imported image (see the module's docstring)
SUFFIX = "-import"  # default names: YYYYMMDD-HHMMSS-import
# squashfs's compression ids (squashfs_fs.h)
COMPRESSION_IDS = {1: "gzip", 2: "lzma", 3: "lzo", 4: "xz", 5: "lz4", 6: "zstd"}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_digest(text: str) -> str:
    """A SHA-256 given by hand (``--sha256``), as ``sha256sum`` prints it (a file name
    after it is ignored)."""
    words = text.split()
    digest = (words[0] if words else "").lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(digest):
        raise UsageError(f"--sha256 {text!r} is not a SHA-256 digest (64 hexadecimal digits)")
    return digest


def import_image(eng: Engine, source: str, *, name: str | None = None,
                 description: str = "", sha256: str | None = None,
                 progress: ProgressFn | None = None) -> ImageMeta:
    """Add the squashfs image ``source`` (a file, ``-`` for standard input, an http(s)
    URL) to the store as a full image named ``name`` (default: the file's stem when it is
    a free image name, else ``YYYYMMDD-HHMMSS-import``), after checking it; ``sha256``:
    the digest it must have. Returns its metadata. Called by :meth:`Engine.import_image`,
    which holds the store's lock."""
    from .create import SPACE_MARGIN

    st = eng.store
    st.require()
    src = parse_source(source)
    expected = check_digest(sha256) if sha256 is not None else None
    sibling = _sibling_meta(src)
    if sibling is not None and sibling.kind is Kind.INCREMENTAL:
        raise UsageError(
            f"{src.label} is an incremental restore point: it works only on the stack it "
            f"was made on ({' '.join(sibling.stack)}); import a full one (ibi create --full)")
    if src.kind == "file":
        _check_file(src)  # before recovery's and the copy's work
    eng.recover()
    name = _pick_name(eng, name, src)
    if not description:
        description = f"imported from {src.label}"
        if sibling is not None and sibling.description:
            description += f": {sibling.description}"
    tmp = st.tmp_path(name, IMAGE_EXT)
    kernels_before = set(st.kernel_ids())
    try:
        digest, size = _receive(eng, src, tmp, progress, SPACE_MARGIN)
        _check_digest(src, digest, size, expected, sibling)
        why = squash.check_superblock(tmp, size)
        if why:
            raise IntegrityError(f"{src.label}: {why}")
        try:
            squash.check_image(tmp)
        except CommandError as e:
            raise IntegrityError(f"{src.label} is not a readable squashfs image ({e})") from None
        compressor = _compressor(tmp)
        try:
            with eng._image_tree(tmp) as tree:
                _check_tree(tree, src.label, name)
                kplan = kernels.plan(st, tree, (), (), None)
                eng._check_space(kplan.needed + SPACE_MARGIN, "keep the image's kernels")
                kept = eng._keep_kernels(kplan)
        except MountError as e:
            raise IntegrityError(f"{src.label} cannot be mounted: "
                                 f"{str(e).split(': ', 1)[-1]}") from None
        if not kept:
            log.warning("%s has no kernel that ibi can boot (boot/vmlinuz-VERSION with "
                        "boot/initrd.img-VERSION and usr/lib/modules/VERSION): booting it "
                        "takes another system's kernel, whose modules it lacks", name)
        meta = eng._commit_image(tmp, name, Kind.FULL, description, (), None, compressor,
                                 progress, source_layer=IMPORTED, kernels=kept)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if not st.has_image(name):  # metadata written, the rename not done: ours (the
            with contextlib.suppress(FileNotFoundError):  # name was free, under the lock)
                st.meta_path(name).unlink()
        if set(st.kernel_ids()) - kernels_before:  # copies no image names: deleted
            eng._refresh_quietly()
        raise
    eng._refresh_quietly()  # the image in the boot plan: its Live Review, a switch target
    return meta


# ---------------------------------------------------------------------- before the copy

def _sibling_meta(src: Source) -> ImageMeta | None:
    """The metadata another ibi machine keeps beside NAME.sqfs (NAME.yaml), if there."""
    if src.kind != "file" or src.path.suffix != IMAGE_EXT:
        return None
    path = src.path.with_suffix(META_EXT)
    try:
        return meta_from_yaml(read_store_text(path, str(path)), str(path))
    except FileNotFoundError:
        return None
    except StoreError as e:
        raise IntegrityError(f"{e}: cannot check the image against it",
                             hint=f"move {path} away to import without that check") from None


def _check_file(src: Source) -> None:
    try:
        mode = src.path.stat().st_mode
    except FileNotFoundError:
        raise NotFound(f"image file {src.label} does not exist") from None
    except OSError as e:
        raise NotFound(f"cannot read {src.label}: {e.strerror}") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{src.label} is a directory, not a squashfs image (squash it first: "
                         "mksquashfs DIR FILE.sqfs, or ibi create --full on that system)")
    if stat.S_ISREG(mode):  # a fifo or a device is read as a stream
        why = squash.check_superblock(src.path, src.path.stat().st_size)
        if why:
            raise IntegrityError(f"{src.label}: {why}")


def _taken(eng: Engine) -> set[str]:
    """Names other images or the stacks refer to: an image named like one of them would
    stand in for it (a missing image's name, say)."""
    st = eng.store
    names = set(st.image_names())
    for prev in (False, True):
        with contextlib.suppress(StoreError):
            names.update(st.read_roottab(prev=prev))
    for n in list(names):
        meta = st.try_meta(n)
        if meta is not None:
            names.update(meta.stack)
            if meta.parent:
                names.add(meta.parent)
    return names


def _pick_name(eng: Engine, name: str | None, src: Source) -> str:
    st = eng.store
    taken = _taken(eng)

    def free(n: str) -> bool:
        return n not in taken and not any(
            os.path.lexists(p) for p in (st.image_path(n), st.meta_path(n)))

    if name is not None:
        check_name(name)
        if not free(name):
            raise UsageError(f"an image named {name!r} already exists (or a stack names it):"
                             " choose another name with --name")
        return name
    if src.kind == "file":
        with contextlib.suppress(BadName):
            stem = check_name(src.path.stem if src.path.suffix == IMAGE_EXT
                              else src.path.name)
            if free(stem):
                return stem
            log.info("%s is taken: the image gets a timestamp name", stem)
    base = utcnow().strftime("%Y%m%d-%H%M%S") + SUFFIX
    out, n = base, 1
    while not free(out):
        n += 1
        out = f"{base}.{n}"
    return out


# ---------------------------------------------------------------------- the checks

def _check_digest(src: Source, digest: str, size: int, expected: str | None,
                  sibling: ImageMeta | None) -> None:
    if expected is not None and digest != expected:
        raise IntegrityError(f"{src.label} has sha256 {digest}, not the {expected} "
                             "expected (--sha256)")
    if sibling is not None:
        where = src.path.with_suffix(META_EXT).name
        if size != sibling.size:
            raise IntegrityError(f"{src.label} has {size} bytes, not the {sibling.size} its "
                                 f"metadata ({where}) says")
        if digest != sibling.sha256:
            raise IntegrityError(f"{src.label} has sha256 {digest}, not the "
                                 f"{sibling.sha256} its metadata ({where}) says")


def _compressor(image: Path) -> str:
    with open(image, "rb") as f:
        sb = f.read(22)
    return COMPRESSION_IDS.get(int.from_bytes(sb[20:22], "little"), "unknown")


def _check_tree(tree: Path, label: str, name: str) -> None:
    for d in ("usr", "etc"):
        try:
            is_dir = stat.S_ISDIR(os.lstat(tree / d).st_mode)
        except FileNotFoundError:
            is_dir = False
        if not is_dir:
            raise IntegrityError(f"{label} is not a root file system: it has no /{d} "
                                 "directory")
    if not os.path.lexists(tree / "usr/bin/ibi"):
        log.warning("%s has no /usr/bin/ibi: the maintenance menu cannot run from a stack "
                    "of it alone (install the ibi package in the image)", name)

