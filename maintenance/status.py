"""What ``ibi status`` and the menu show: the stack, the writable layer, disk and RAM use,
and the notices about anything wrong, as data (``Notice(level, code, data)``: the CLI and
the menu word them, maintenance/wording.py); and how a size is written (:func:`human`).

Functions of the :class:`~maintenance.engine.Engine`, which calls them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from . import kernels, mounts, reclaim
from . import layer as layerfs
from .errors import NotFound, StoreError
from .fsio import tree_bytes
from .model import (
    DiskUsage,
    ImageMeta,
    Kind,
    Level,
    Notice,
    Policy,
    RamUsage,
    StackEntry,
    Status,
    TmpfsUse,
)
from .storelayer import SQUASHED

if TYPE_CHECKING:
    from .engine import Engine

LOW_SPACE_FRACTION = 0.10
LOW_SPACE_BYTES = 512 << 20
RAM_WARN = 0.80  # a RAM overlay this full is warned about (status, menu, journal)
RAM_CRITICAL = 0.95


def status(eng: Engine) -> Status:
    """The stack, the writable layer, disk and RAM use, and anything wrong."""
    eng.store.require()
    st = eng.store
    notices: list[Notice] = []
    try:
        tab = st.read_roottab()
    except StoreError as e:
        tab = []
        notices.append(Notice(Level.ERROR, "roottab-unusable", {"error": str(e)}))
        with contextlib.suppress(StoreError):
            prev = st.read_roottab(prev=True)
            notices.append(Notice(Level.INFO, "roottab-prev", {"stack": prev}))
    sizes = st.image_sizes()
    stack = tuple(_entry(eng, n, tab[:i], sizes) for i, n in enumerate(tab))
    others = tuple(_entry(eng, n, None, sizes) for n in st.image_names() if n not in tab)
    for entry in (*stack, *others):
        if entry.problem:
            lvl = Level.ERROR if entry in stack else Level.WARNING
            notices.append(Notice(lvl, "image-problem",
                                  {"image": entry.name, "problem": entry.problem}))

    layer = layerfs.stats(st.upper) if st.upper.is_dir() else None
    with contextlib.suppress(OSError):
        stray = eng.home_in_layer()
        if stray:
            notices.append(Notice(Level.WARNING, "home-in-layer", {"entries": len(stray)}))
    if layer is None:
        notices.append(Notice(Level.WARNING, "layer-missing"))
    store_bytes = sum(sizes.values())
    entries = st.trash_entries()
    set_aside = sum((tree_bytes(p) for p in entries if not p.name.endswith(SQUASHED)), 0)
    cleared = reclaim.waiting_bytes(eng)  # restore points' layers, deleted by ibi reclaim
    trash = set_aside + cleared
    du = psutil.disk_usage(str(st.data))
    disk = DiskUsage(du.total, du.used, du.free, store_bytes,
                     layer.bytes if layer else 0, trash)
    if du.free < max(LOW_SPACE_BYTES, du.total * LOW_SPACE_FRACTION):
        notices.append(Notice(Level.WARNING, "low-space", {"free": du.free, "total": du.total}))
    notices += ram_notices(ram := _ram(eng))
    if set_aside:
        notices.append(Notice(Level.INFO, "trash", {"bytes": set_aside}))
    # (the cleared ones go by themselves, in seconds: counted in the disk's trash only)
    try:
        queued = st.read_pending()
        if queued:
            notices.append(Notice(Level.INFO, "queued", dict(queued)))
    except StoreError as e:
        notices.append(Notice(Level.ERROR, "queued-unusable", {"error": str(e)}))
    for what in eng._recovery(dry_run=True):
        notices.append(Notice(Level.WARNING, "interrupted", {"step": what}))
    boot = kernels.entry_kernels(st, tab or None, None, ()).get("ibi") if tab else None
    if tab and boot is None and st.bootloader_conf.is_file():
        notices.append(Notice(Level.WARNING, "no-kernel"))
    stack_ks = kernels.stack_kernels(st, tab)
    layer_ks = tuple(k.version for k in kernels.layer_kernels(st, tab) or ()
                     if k not in stack_ks)
    trial, boots = eng.trial(), 0
    if trial:
        boots = st.count_boots()
        notices.append(Notice(Level.WARNING if boots else Level.INFO, "trial",
                              {"boots": boots, "tries": trial.tries, "good": list(trial.good),
                               "reason": trial.reason, "failure": trial.failure}))
    if trial is None and st.trial_path.exists():
        try:
            st.read_trial()
            notices.append(Notice(Level.INFO, "trial-void"))
        except StoreError as e:
            notices.append(Notice(Level.WARNING, "trial-unusable", {"error": str(e)}))
    fb = eng.last_fallback()
    if fb:
        notices.append(Notice(Level.WARNING, "fallback",
                              {"failed": list(fb.failed), "good": list(fb.good),
                               "boots": fb.boots, "at": fb.at, "why": fb.why}))
    try:
        policy = st.read_policy()
    except StoreError as e:
        notices.append(Notice(Level.WARNING, "policy-unusable", {"error": str(e)}))
        policy = Policy()
    if len(tab) > policy.max_depth:
        notices.append(Notice(Level.INFO, "depth", {"depth": len(tab),
                                                    "bound": policy.max_depth}))
    pinned = tuple(m.name for m in eng.images() if m.pinned)
    st.save_meta_cache()
    return Status(str(st.data), stack, others, layer, disk, ram, tuple(notices),
                  boot.version if boot else None, layer_ks, trial, boots, fb, pinned)


def _entry(eng: Engine, name: str, below: list[str] | None,
           sizes: dict[str, int]) -> StackEntry:
    """``sizes``: :meth:`Store.image_sizes` (which images are present)."""
    st = eng.store
    present = name in sizes
    try:
        meta: ImageMeta | None = st.read_meta(name)
        meta_problem = None
    except (NotFound, StoreError) as e:
        meta, meta_problem = None, str(e)
    problem = None if present else "image file is missing"
    chain_ok = True
    if meta and below is not None:
        want = meta.stack if meta.kind is Kind.INCREMENTAL else ()
        if tuple(below) != tuple(want):
            chain_ok = False
            problem = problem or (
                f"made on [{' '.join(want)}] but stacked on [{' '.join(below)}]")
    if meta and meta.kind is Kind.INCREMENTAL:
        for n in meta.stack:
            if n not in sizes:
                chain_ok = False
                problem = problem or f"parent image {n!r} is missing"
    problem = problem or meta_problem
    return StackEntry(name, meta.kind if meta else None, meta.created if meta else None,
                      sizes.get(name, 0),
                      meta.description if meta else "", meta.parent if meta else None,
                      present, chain_ok and meta is not None, problem,
                      tuple(k.version for k in meta.kernels) if meta else ())


def _ram(eng: Engine) -> RamUsage:
    vm = psutil.virtual_memory()
    return RamUsage(vm.total, vm.available, tuple(tmpfs_uppers(eng.data_dir)))


def home_in_layer(eng: Engine) -> list[str]:
    """Files under /home that the writable layer holds (written while the store's home
    was not bound there): restore points leave /home out, so they would be lost."""
    home = eng.store.upper / "home"
    if not home.is_dir() or home.is_symlink():
        return []
    out = []
    for e in sorted(os.scandir(home), key=lambda e: e.name):
        st = e.stat(follow_symlinks=False)
        if not layerfs.is_whiteout(st, e.path):
            out.append(e.name)
    return out


def tmpfs_uppers(data_dir: Path | None = None) -> list[TmpfsUse]:
    """Every RAM file system (tmpfs, ramfs) that an overlay in this mount namespace writes
    to, with its use; also the data directory when it lives in RAM."""
    table = mounts.mountinfo()
    by_point = {m.mountpoint: m for m in table}

    def fs_of(path: str) -> str | None:
        p = os.path.realpath(path)
        while True:
            if p in by_point:
                return p
            if p == "/":
                return None
            p = os.path.dirname(p)

    seen: dict[str, str] = {}
    for m in table:
        if m.fstype == "overlay":
            for upper in mounts.option_values(m, "upperdir"):
                fs = fs_of(upper)
                if fs and by_point[fs].fstype in ("tmpfs", "ramfs"):
                    seen.setdefault(fs, m.mountpoint)
    if data_dir is not None:
        fs = fs_of(str(data_dir))
        if fs and by_point[fs].fstype in ("tmpfs", "ramfs"):
            seen.setdefault(fs, "")
    out = []
    for fs, serves in seen.items():
        with contextlib.suppress(OSError):
            u = os.statvfs(fs)
            total = u.f_blocks * u.f_frsize
            out.append(TmpfsUse(fs, total, total - u.f_bfree * u.f_frsize, serves))
    return out


def ram_notices(ram: RamUsage) -> list[Notice]:
    out = []
    for t in ram.tmpfs:
        data = {"mountpoint": t.mountpoint, "used": t.used, "total": t.total,
                "serves": t.serves}
        if t.fraction >= RAM_CRITICAL:
            out.append(Notice(Level.ERROR, "ram-critical", data))
        elif t.fraction >= RAM_WARN:
            out.append(Notice(Level.WARNING, "ram-full", data))
    return out


def human(n: float) -> str:
    """Bytes as a short figure with a binary unit, ``4.0 KiB`` (the CLI and the menu)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
