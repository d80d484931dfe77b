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
- Kernel directories no image and no layer record names are deleted
  (``kernelstore.gc``): they are copies of files the images or the layer still hold.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import bootplan
from .errors import BadName, IbiError
from .kernelstore import _read_kept, file_sha256, keep
from .model import KernelRef
from .records import KERNEL_VERSION_MAX, check_kernel_id
from .store import Store

MODULE_DIRS = ("usr/lib/modules", "lib/modules")


VMLINUZ_MAX = 256 << 20  # a bigger "kernel" in an image tree is not one (or an attack)
INITRD_MAX = 2 << 30


@dataclass(frozen=True)
class Found:
    """A kernel installed in a tree."""

    version: str
    vmlinuz: Path | None  # None: not in the tree's /boot (a separate /boot left out of the
    # images): only a kernel ibi already keeps can boot it
    initrd: Path | None  # None: no initramfs beside it, it cannot boot a stack


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Order kernel versions as ``sort -V`` does (6.12.9 < 6.12.10)."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t)
                 for t in re.findall(r"\d+|\D+", version))


def _inside(tree: Path, path: Path) -> bool:
    """Whether ``path`` resolves inside ``tree`` (an image's symlinks must not lead out)."""
    root = os.path.realpath(tree)
    real = os.path.realpath(path)
    return real == root or real.startswith(root.rstrip("/") + "/")


def _regular(path: Path, limit: int) -> bool:
    with contextlib.suppress(OSError):
        st = path.lstat()
        return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= limit
    return False


def _has_modules(tree: Path, version: str) -> bool:
    for d in MODULE_DIRS:
        p = tree / d / version
        if os.path.isdir(p) and not os.path.islink(p) and _inside(tree, p):
            return True
    return False


def scan(tree: Path) -> dict[str, Found]:
    """The kernels installed in ``tree``, by version: a vmlinuz in boot/ whose modules are
    there too. Symlinks that lead out of the tree, and absurd sizes, are ignored."""
    out: dict[str, Found] = {}
    boot = tree / "boot"
    if os.path.islink(boot) or not _inside(tree, boot):
        return out
    with contextlib.suppress(OSError):
        for p in sorted(boot.glob("vmlinuz-*")):
            version = p.name.removeprefix("vmlinuz-")
            try:
                check_kernel_id(version)
            except BadName:
                continue
            if len(version) > KERNEL_VERSION_MAX or not _regular(p, VMLINUZ_MAX) \
                    or not _has_modules(tree, version):
                continue
            initrd = boot / f"initrd.img-{version}"
            out[version] = Found(version, p, initrd if _regular(initrd, INITRD_MAX) else None)
    return out


def _key(version: str, vmlinuz_sha: str, source_initrd: str) -> tuple[str, str, str]:
    return version, vmlinuz_sha, source_initrd


def _pool(refs: Iterable[KernelRef]) -> dict[tuple[str, str, str], KernelRef]:
    return {_key(k.version, k.vmlinuz_sha256, k.source_initrd_sha256 or k.initrd_sha256): k
            for k in refs}


@dataclass(frozen=True)
class Plan:
    """What collecting a tree's kernels will do: made once, it gives the space to check
    before the work, then :func:`collect` carries it out (no file is read twice)."""

    previous: tuple[KernelRef, ...]  # the order kept kernels keep
    first: tuple[str, ...]  # versions booted first (the caller's own initramfs)
    reuse: dict[str, KernelRef]  # version -> a kept kernel that boots it
    copy: dict[str, tuple[Path, Path, str]]  # version -> (vmlinuz, initrd, tree's initrd sha)
    warnings: list[str]

    @property
    def needed(self) -> int:
        """Bytes the copies will add to DATA/boot/kernels/."""
        total = 0
        for vm, ini, _ in self.copy.values():
            with contextlib.suppress(OSError):
                total += vm.stat().st_size + ini.stat().st_size
        return total


def plan(st: Store | None, tree: Path, previous: Sequence[KernelRef],
         known: Iterable[KernelRef] = (),
         extra: Mapping[str, tuple[Path, Path]] | None = None) -> Plan:
    """Plan keeping the kernels of the system in ``tree``, the one to boot first at the
    front: those in ``extra`` (version -> (vmlinuz, initramfs), e.g. the one ``ibi install``
    built), then kernels new since ``previous`` (newest version first), then the kernels of
    ``previous`` still there, in its order. A kept kernel (of ``previous`` or ``known``)
    with the same vmlinuz, made for the same initramfs of the tree, is reused. ``st`` None:
    only for the figures (kept files are not looked at)."""
    found = scan(tree)
    # kernels ibi keeps whose modules are still in the tree but whose vmlinuz is not (a
    # separate /boot, left out of the images): still the system's
    for k in previous:
        if k.version not in found and _has_modules(tree, k.version):
            found[k.version] = Found(k.version, None, None)
    extra = dict(extra or {})
    pool = _pool((*known, *previous))
    by_version = {k.version: k for k in (*known, *previous)}
    reuse: dict[str, KernelRef] = {}
    copy: dict[str, tuple[Path, Path, str]] = {}
    warnings = []
    for v, f in found.items():
        tree_initrd_sha = file_sha256(f.initrd) if f.initrd else ""
        if v in extra:
            copy[v] = (*extra[v], tree_initrd_sha)
            continue
        if f.vmlinuz is None:
            ref = by_version.get(v)
            if ref is not None and (st is None or _read_kept(st, ref.id) is not None):
                reuse[v] = ref
            continue
        ref = pool.get(_key(v, file_sha256(f.vmlinuz), tree_initrd_sha))
        if ref is not None and (st is None or _read_kept(st, ref.id) is not None):
            reuse[v] = ref
        elif f.initrd is None:
            warnings.append(f"Linux {v} has no initramfs (boot/initrd.img-{v}): ibi cannot "
                            "boot it")
        else:
            copy[v] = (f.vmlinuz, f.initrd, tree_initrd_sha)
    for v, (vm, ini) in extra.items():
        if v not in copy:
            copy[v] = (vm, ini, "")
    return Plan(tuple(previous), tuple(extra), reuse, copy, warnings)


def needed_bytes(tree: Path, known: Iterable[KernelRef],
                 extra: Mapping[str, tuple[Path, Path]] | None = None) -> int:
    """Bytes that collecting ``tree``'s kernels would add to DATA/boot/kernels/."""
    known = tuple(known)
    return plan(None, tree, known, known, extra).needed


def collect(st: Store, p: Plan) -> tuple[tuple[KernelRef, ...], list[str]]:
    """Carry out plan ``p``: copy the new kernels in (:func:`keep`). Returns the kernels of
    the tree, the one to boot first at the front, and the plan's warnings."""
    refs = dict(p.reuse)
    for v, (vm, ini, src) in p.copy.items():
        refs[v] = keep(st, v, vm, ini, src)
    before = [k.id for k in p.previous]
    first = [refs[v] for v in p.first if v in refs]
    kept = sorted((k for k in refs.values() if k.id in before and k not in first),
                  key=lambda k: before.index(k.id))
    new = sorted((k for k in refs.values() if k.id not in before and k not in first),
                 key=lambda k: version_key(k.version), reverse=True)
    return (*first, *new, *kept), p.warnings


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
    stack_boot: KernelRef | None = stack_ks[0] if stack_ks else None
    boot = stack_boot
    if pending and pending.get("action") == "rollback" and pending.get("name"):
        # every boot runs the queued action first, Maintenance Mode's too
        with contextlib.suppress(IbiError, OSError):
            ks = stack_kernels(st, bootplan.stack_for(st, pending["name"],
                                                      tuple(normal or ())))
            stack_boot = boot = ks[0] if ks else boot
    elif not (pending and pending.get("action") == "restore"):
        lk = layer_kernels(st, normal)
        if lk:
            boot = lk[0]
    out["ibi"] = boot
    out["ibi-maintenance"] = stack_boot
    for name, stack in reviews:
        ks = stack_kernels(st, stack)
        # an image that names no kernel (and none below it): the stack's, which exists
        out[f"review:{name}"] = ks[0] if ks else stack_boot
    return out


def sync_layer(st: Store, root: Path, tab: Sequence[str],
               check_space: Callable[[int], None] | None = None) -> list[str]:
    """Record the kernels of the running system ``root`` (the stack ``tab`` under the
    writable layer) that the stack lacks: called by the kernel packages' hook.
    ``check_space(bytes)`` runs before anything is copied, when something is. Returns
    warnings."""
    stack_ks = stack_kernels(st, tab)
    current = layer_kernels(st, tab)
    p = plan(st, root, current or stack_ks, stack_ks)
    if p.needed and check_space is not None:
        check_space(p.needed)
    kernels, warnings = collect(st, p)
    same = {k.id for k in kernels} == {k.id for k in stack_ks}
    if not kernels:
        warnings.append("the running system has no kernel with an initramfs: the next boot "
                        "uses the stack's")
    if same or not kernels:
        st.clear_layer_kernels()
    elif current != kernels:
        st.write_layer_kernels(st.layer_id(), tab, kernels)
    return warnings
