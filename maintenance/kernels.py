"""Kernels per restore point: each stack boots the kernel it was made with.

A kernel booted with modules from another system finds none of them (no disk, no network):
the pain of snapshot boot menus that give every entry the newest kernel in /boot. So ibi
keeps, for every image, the kernels of the system up to that image, and boots each stack
with its own:

- When an image is made (init, full, incremental) its tree is scanned: each
  ``boot/vmlinuz-V`` with modules in ``usr/lib/modules/V`` and an initramfs
  (``boot/initrd.img-V``, built by the kernel package's dracut hook with the ibi module, or
  one the caller built) is a kernel of the image. A kernel already kept for the stack below
  (same version, same vmlinuz) is reused; a new one is copied into
  ``DATA/boot/kernels/<version>-<sha12>/`` (temp directory, fsync, rename), where GRUB
  reads it and where every image that has it shares it.
- The image's metadata lists its kernels, the one to boot first: a kernel new in the image
  (installed since the stack below was made; the newest version if several), then the
  kernels it kept, in their order.
- A kernel installed in the running system lives in the writable layer until a restore
  point takes it in. The kernel package's hook (``ibi boot-entries --write``) records it
  in ``DATA/layer/kernels.yaml`` (with the layer's id and stack), so the next normal boot
  uses it; Restore System and Roll back set that layer aside and the record with it.
- Kernel directories no image and no layer record names are deleted (``gc``): they are
  copies of files the images or the layer still hold.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import bootplan
from .errors import BadName, IbiError, StoreError
from .model import KernelRef
from .store import (
    INITRD,
    KERNEL_META,
    TMP_PREFIX,
    VMLINUZ,
    Store,
    atomic_write,
    check_kernel_id,
    durable_rename,
    fsync_dir,
    kernel_from_doc,
    kernel_to_doc,
    remove_tree,
)

log = logging.getLogger(__name__)

MODULE_DIRS = ("usr/lib/modules", "lib/modules")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Found:
    """A kernel installed in a tree."""

    version: str
    vmlinuz: Path
    initrd: Path | None  # None: no initramfs beside it, it cannot boot a stack


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Order kernel versions as ``sort -V`` does (6.12.9 < 6.12.10)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|\D+", version))


def _regular(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return path.is_file() and not path.is_symlink()
    return False


def scan(tree: Path) -> list[Found]:
    """The kernels installed in ``tree``: a vmlinuz in boot/ whose modules are there too."""
    out = []
    boot = tree / "boot"
    with contextlib.suppress(OSError):
        for p in sorted(boot.glob("vmlinuz-*")):
            version = p.name.removeprefix("vmlinuz-")
            try:
                check_kernel_id(version)
            except BadName:
                continue
            if not _regular(p) or not any(
                    os.path.isdir(tree / d / version) and not os.path.islink(tree / d / version)
                    for d in MODULE_DIRS):
                continue
            initrd = boot / f"initrd.img-{version}"
            out.append(Found(version, p, initrd if _regular(initrd) else None))
    return out


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
    with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError, KeyError,
                             ValueError, TypeError, BadName):
        doc = yaml.safe_load((st.kernel_dir(kernel_id) / KERNEL_META).read_text("utf-8"))
        ref = kernel_from_doc(doc)
        vmlinuz, initrd = st.kernel_files(kernel_id)
        if ref.id == kernel_id and vmlinuz.is_file() and initrd.is_file():
            return ref
    return None


def keep(st: Store, version: str, vmlinuz: Path, initrd: Path,
         vmlinuz_sha: str | None = None) -> KernelRef:
    """Copy a kernel and its initramfs into DATA/boot/kernels/ (once per vmlinuz): a temp
    directory, fsynced, renamed into place."""
    check_kernel_id(version)
    vsha = vmlinuz_sha or file_sha256(vmlinuz)
    kid = check_kernel_id(f"{version}-{vsha[:12]}")
    kept = _read_kept(st, kid)
    if kept is not None and kept.vmlinuz_sha256 == vsha:
        return kept
    st.kernels.mkdir(parents=True, exist_ok=True)
    tmp = st.kernels / f"{TMP_PREFIX}{kid}"
    remove_tree(tmp)
    tmp.mkdir(mode=0o700)
    try:
        got_vsha, vsize = _copy_hashed(vmlinuz, tmp / VMLINUZ)
        isha, isize = _copy_hashed(initrd, tmp / INITRD)
        if got_vsha != vsha:
            raise StoreError(f"{vmlinuz} changed while ibi copied it")
        ref = KernelRef(version, kid, vsha, isha, vsize + isize)
        atomic_write(tmp / KERNEL_META, yaml.safe_dump(kernel_to_doc(ref), sort_keys=False))
        fsync_dir(tmp)
        final = st.kernel_dir(kid)
        if final.exists():  # a damaged copy: replaced by the whole new one
            remove_tree(final)
        durable_rename(tmp, final)
    except BaseException:
        remove_tree(tmp)
        raise
    return ref


def _pool(refs: Iterable[KernelRef]) -> dict[tuple[str, str], KernelRef]:
    return {(k.version, k.vmlinuz_sha256): k for k in refs}


def needed_bytes(tree: Path, known: Iterable[KernelRef],
                 extra: Mapping[str, tuple[Path, Path]] | None = None) -> int:
    """Bytes that collecting ``tree``'s kernels would add to DATA/boot/kernels/."""
    pool = _pool(known)
    total = 0
    found = {f.version: f for f in scan(tree)}
    for v, (vm, ini) in (extra or {}).items():
        found[v] = Found(v, vm, ini)
    for f in found.values():
        if f.initrd is None:
            continue
        with contextlib.suppress(OSError):
            if (f.version, file_sha256(f.vmlinuz)) not in pool:
                total += f.vmlinuz.stat().st_size + f.initrd.stat().st_size
    return total


def collect(st: Store, tree: Path, previous: Sequence[KernelRef],
            known: Iterable[KernelRef] = (),
            extra: Mapping[str, tuple[Path, Path]] | None = None
            ) -> tuple[tuple[KernelRef, ...], list[str]]:
    """The kernels of the system in ``tree``, kept on the data partition, the one to boot
    first at the front: those in ``extra`` (version -> (vmlinuz, initramfs), e.g. the one
    ``ibi install`` built), then kernels new since ``previous`` (newest version first),
    then the kernels of ``previous`` still there, in its order. A kernel of ``previous``
    or ``known`` with the same vmlinuz is reused. Returns the kernels and warnings."""
    extra = dict(extra or {})
    found = {f.version: f for f in scan(tree)}
    for v, (vm, ini) in extra.items():
        found[v] = Found(v, vm, ini)
    pool = _pool((*known, *previous))
    refs: dict[str, KernelRef] = {}
    warnings = []
    for v, f in found.items():
        vsha = file_sha256(f.vmlinuz)
        ref = pool.get((v, vsha))
        if ref is not None and v not in extra and _read_kept(st, ref.id) is not None:
            refs[v] = ref
        elif f.initrd is None:
            warnings.append(f"Linux {v} has no initramfs (boot/initrd.img-{v}): ibi cannot "
                            "boot it")
        else:
            refs[v] = keep(st, v, f.vmlinuz, f.initrd, vsha)
    before = [k.id for k in previous]
    first = [refs[v] for v in extra if v in refs]
    kept = sorted((k for k in refs.values() if k.id in before and k not in first),
                  key=lambda k: before.index(k.id))
    new = sorted((k for k in refs.values() if k.id not in before and k not in first),
                 key=lambda k: version_key(k.version), reverse=True)
    return (*first, *new, *kept), warnings


# --------------------------------------------------------------------- which kernel boots

def stack_kernels(st: Store, stack: Sequence[str]) -> tuple[KernelRef, ...]:
    """The kernels of a stack: its top image's (or, for images made before ibi kept
    kernels, the nearest image's below that has some)."""
    for name in reversed(stack):
        meta = st.try_meta(name)
        if meta is not None and meta.kernels:
            return meta.kernels
    return ()


def layer_kernels(st: Store, tab: Sequence[str] | None) -> tuple[KernelRef, ...] | None:
    """The kernels the writable layer's record names, if it is this layer's and made on
    this stack; else None."""
    rec = st.read_layer_kernels()
    if rec is None or tab is None:
        return None
    layer_id, stack, kernels = rec
    if layer_id != st.layer_id() or list(stack) != list(tab) or not kernels:
        return None
    return kernels


def entry_kernels(st: Store, normal: Sequence[str] | None, fallback: Sequence[str] | None,
                  reviews: Iterable[tuple[str, Sequence[str]]]) -> dict[str, KernelRef | None]:
    """The kernel of each boot entry: ``ibi`` (the normal boot), ``ibi-maintenance`` and
    ``review:NAME``. The normal boot takes the writable layer's kernel, unless the action
    queued for the next boot sets that layer aside (restore, rollback): then that of the
    stack it boots. Maintenance Mode takes the stack's own, never the layer's: it must
    boot even when a kernel installed in the layer does not."""
    out: dict[str, KernelRef | None] = {}
    active = normal or fallback
    pending = None
    with contextlib.suppress(IbiError):
        pending = st.read_pending()
    stack_ks = stack_kernels(st, active) if active else ()
    boot: KernelRef | None = stack_ks[0] if stack_ks else None
    if pending and pending.get("action") == "rollback" and pending.get("name"):
        with contextlib.suppress(IbiError, OSError):
            ks = stack_kernels(st, bootplan.stack_for(st, pending["name"],
                                                      tuple(normal or ())))
            boot = ks[0] if ks else boot
    elif not (pending and pending.get("action") == "restore"):
        lk = layer_kernels(st, normal)
        if lk:
            boot = lk[0]
    out["ibi"] = boot
    out["ibi-maintenance"] = stack_ks[0] if stack_ks else None
    for name, stack in reviews:
        ks = stack_kernels(st, stack)
        out[f"review:{name}"] = ks[0] if ks else None
    return out


def sync_layer(st: Store, root: Path, tab: Sequence[str]) -> list[str]:
    """Record the kernels of the running system ``root`` (the stack ``tab`` under the
    writable layer) that the stack lacks: called by the kernel packages' hook. Returns
    warnings."""
    stack_ks = stack_kernels(st, tab)
    current = layer_kernels(st, tab)
    kernels, warnings = collect(st, root, previous=current or stack_ks, known=stack_ks)
    same = {(k.version, k.vmlinuz_sha256) for k in kernels} == \
        {(k.version, k.vmlinuz_sha256) for k in stack_ks}
    if not kernels:
        warnings.append("the running system has no kernel with an initramfs: the next boot "
                        "uses the stack's")
    if same or not kernels:
        st.clear_layer_kernels()
    elif current != kernels:
        st.write_layer_kernels(st.layer_id(), tab, kernels)
    return warnings


# --------------------------------------------------------------------- upkeep

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
            shutil.rmtree(st.kernel_dir(kid))
            gone.append(kid)
    if gone:
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
