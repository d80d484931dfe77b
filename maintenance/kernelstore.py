"""The kernels ibi keeps in ``DATA/boot/kernels/<version>-<sha12>/`` (maintenance/kernels.py
says which ones each image and boot entry takes): a kernel and its initramfs copied in once
per pair of files (:func:`keep`), read back and checked against their checksums
(:func:`check`), and deleted once no image and no layer record names them (:func:`gc`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from pathlib import Path

import yaml

from .errors import BadName, StoreError
from .fsio import (
    TMP_PREFIX,
    atomic_write,
    durable_rename,
    fsync_dir,
    load_yaml,
    read_store_text,
    remove_tree,
)
from .model import KernelRef
from .records import check_kernel_id, kernel_from_doc, kernel_to_doc
from .store import INITRD, KERNEL_META, VMLINUZ, Store

log = logging.getLogger("maintenance.kernels")  # the kernels' log, as before the split

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashed(src: Path, dst: Path) -> tuple[str, int]:
    """Copy ``src`` to a new ``dst`` (fsynced); return its sha256 and size."""
    h = hashlib.sha256()
    size = 0
    with open(src, "rb", buffering=0) as fi, open(dst, "xb") as fo:
        while chunk := fi.read(_CHUNK):
            h.update(chunk)
            fo.write(chunk)
            size += len(chunk)
        fo.flush()
        os.fsync(fo.fileno())
    os.chmod(dst, 0o600)  # as Debian keeps them: kernels are not for every user to read
    return h.hexdigest(), size


def _read_kept(st: Store, kernel_id: str) -> KernelRef | None:
    with contextlib.suppress(OSError, StoreError, KeyError, ValueError, TypeError,
                             AttributeError, BadName):
        doc = load_yaml(read_store_text(st.kernel_dir(kernel_id) / KERNEL_META))
        ref = kernel_from_doc(doc)
        vmlinuz, initrd = st.kernel_files(kernel_id)
        if ref.id == kernel_id and vmlinuz.is_file() and initrd.is_file():
            return ref
    return None


def keep(st: Store, version: str, vmlinuz: Path, initrd: Path,
         source_initrd_sha: str = "") -> KernelRef:
    """Copy a kernel and its initramfs into DATA/boot/kernels/<version>-<id>/ (once per
    pair of files): a temp directory, fsynced, renamed into place."""
    check_kernel_id(version)
    new_parent = not st.kernels.is_dir()
    st.kernels.mkdir(parents=True, exist_ok=True)
    if new_parent:
        fsync_dir(st.kernels.parent)
    tmp = st.kernels / f"{TMP_PREFIX}{version}-{os.getpid()}"
    remove_tree(tmp)
    tmp.mkdir(mode=0o700)
    try:
        vsha, vsize = _copy_hashed(vmlinuz, tmp / VMLINUZ)
        isha, isize = _copy_hashed(initrd, tmp / INITRD)
        kid = check_kernel_id(
            f"{version}-{hashlib.sha256(f'{vsha}:{isha}'.encode()).hexdigest()[:12]}")
        kept = _read_kept(st, kid)
        if kept is not None and (kept.vmlinuz_sha256, kept.initrd_sha256) == (vsha, isha):
            remove_tree(tmp)  # the same two files are kept already
            return kept
        ref = KernelRef(version, kid, vsha, isha, vsize + isize, source_initrd_sha or isha)
        atomic_write(tmp / KERNEL_META, yaml.safe_dump(kernel_to_doc(ref), sort_keys=False))
        fsync_dir(tmp)
        final = st.kernel_dir(kid)
        if final.exists():  # a damaged copy, perhaps named by images: mended file by file
            for name in (VMLINUZ, INITRD, KERNEL_META):
                os.replace(tmp / name, final / name)
            fsync_dir(final)
            remove_tree(tmp)
        else:
            durable_rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    return ref

def referenced(st: Store) -> set[str]:
    ids: set[str] = set()
    for name in st.image_names():
        meta = st.try_meta(name)
        if meta is not None:
            ids.update(k.id for k in meta.kernels)
    rec = st.read_layer_kernels()
    if rec is not None and rec[0] == st.layer_id():
        ids.update(k.id for k in rec[2])
    return ids


def gc(st: Store) -> list[str]:
    """Delete kernel directories that no image and no layer record names, and unfinished
    copies; return the kernel ids deleted."""
    gone = []
    for tmp in st.stray_kernel_tmp():
        remove_tree(tmp)
    keep_ids = referenced(st)
    for kid in st.kernel_ids():
        if kid not in keep_ids:
            try:
                shutil.rmtree(st.kernel_dir(kid))
            except OSError as e:  # after a commit: a leftover is no reason to fail it
                log.warning("cannot delete the unused kernel %s: %s", kid, e)
                continue
            gone.append(kid)
    if gone:
        with contextlib.suppress(OSError):
            fsync_dir(st.kernels)
    return gone


def check(st: Store, ref: KernelRef) -> str | None:
    """Why a kept kernel cannot be trusted (files missing or changed), or None."""
    vmlinuz, initrd = st.kernel_files(ref.id)
    for path, want in ((vmlinuz, ref.vmlinuz_sha256), (initrd, ref.initrd_sha256)):
        if not path.is_file():
            return f"{path.name} of Linux {ref.version} is missing ({path.parent})"
        if file_sha256(path) != want:
            return f"{path.name} of Linux {ref.version} is corrupted (checksum mismatch)"
    return None
