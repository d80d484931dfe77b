"""The store's on-disk format: the one module that knows file names and layouts.

What each document holds is parsed and rendered in maintenance/records.py (the small
records: bootrecords.py); the durable writes and reads are maintenance/fsio.py's. Store's
methods for the writable layer and the trash are in storelayer.py (which also names what a
layer holds and the trash entries), for the kernels and the boot records in storeboot.py:
its mixins. See docs/FORMAT.md. Under the data directory ``D``::

    D/.root_images/roottab        active stack, bottom first (text; vi-editable)
    D/.root_images/roottab.prev   the version before the last change (fallback)
    D/.root_images/preserve       (older stores) config paths, imported into state.yaml
    D/.root_images/pending        an action queued for the next boot (yaml)
    D/.root_images/<name>.sqfs    read-only images
    D/.root_images/<name>.yaml    their metadata
    D/.root_images/bootplan       what the initramfs mounts for each way of booting (text)
    D/.root_images/maintenance.passwd  the menu's maintenance password (hashed; optional)
    D/.root_images/policy    settings: boot tries, retention (optional; by hand)
    D/.root_images/trial          the active stack on trial: tries left, the good stack
    D/.root_images/boots          one line per boot of the stack on trial (the initramfs)
    D/.root_images/fallback       what the last automatic fallback did (status shows it)
    D/.root_images/.tmp-*         work in progress (removed by recovery)
    D/boot/                       kernels, initramfs and GRUB's files (ibi install)
    D/boot/bootloader.yaml        the boot entries' settings (ibi install)
    D/boot/kernels/<id>/          a kernel an image (or the layer) boots: vmlinuz,
                                  initrd.img, kernel.yaml; shared by the images that have it
    D/layer/{upper,work,id}       the writable layer (overlay upperdir, workdir, layer id)
    D/layer/kernels.yaml          kernels installed in the running system, not yet in an image
    D/layer.new/                  a fresh layer being prepared (renamed into place)
    D/trash/<stamp>-<id>/         layers set aside by Restore/Rollback, deleted by purge
    D/home/                       bound on /home; never part of any image
    D/state/state.yaml            which operator manages each config path (state operators)
    D/state/captures/<id>/        captured values and stashed files (maintenance/state.py)
    D/state/.tmp-*                a capture being written, or an old one being deleted
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from .errors import BadName, NotFound, StoreError
from .fsio import (
    TMP_PREFIX,
    atomic_write,
    hold_flock,
    load_yaml,
    one_line,
    read_store_text,
)
from .metacache import MetaCache
from .model import ImageMeta
from .records import (
    IMAGE_EXT,
    META_EXT,
    check_kernel_id,
    check_name,
    meta_from_doc,
    meta_to_yaml,
    parse_preserve,
    parse_roottab,
    render_roottab,
)
from .storeboot import StoreBoot
from .storelayer import StoreLayer

STORE = ".root_images"
ROOTTAB = "roottab"
ROOTTAB_PREV = "roottab.prev"
PRESERVE = "preserve"
PENDING = "pending"
BOOTPLAN = "bootplan"
BOOT = "boot"
BOOTLOADER_CONF = "bootloader.yaml"
KERNELS = "kernels"
VMLINUZ = "vmlinuz"
INITRD = "initrd.img"
KERNEL_META = "kernel.yaml"
LAYER_KERNELS = "kernels.yaml"
AUTH = "maintenance.passwd"
POLICY = "policy"
TRIAL = "trial"
BOOTS = "boots"
FALLBACK = "fallback"
FROM_TRASH = "from-trash"  # in layer.new: the trash entry an undo is putting back
LOCK = ".lock"
LOCK_WAIT = 60  # seconds another ibi command may hold the store before we give up
LAYER = "layer"
LAYER_NEW = "layer.new"
TRASH = "trash"
HOME = "home"
STATE = "state"
STATE_CONF = "state.yaml"
CAPTURES = "captures"
CAPTURE_META = "capture.yaml"
STASH = "stash"
META_CACHE = ".meta-cache.json"  # derived, see maintenance/metacache.py
# defined where they are used: TMP_PREFIX (fsio); IMAGE_EXT, META_EXT, FORMAT_VERSION
# (records); MAX_TRIES, PENDING_ACTIONS (bootrecords); SQUASHED (storelayer)


# --- the store -----------------------------------------------------------------------

class Store(StoreBoot, StoreLayer):
    """Paths and primitive reads/writes of one data directory's store (its writable layer
    and trash: StoreLayer; its small records about booting: StoreBoot)."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data = Path(data_dir).absolute()
        self.root = self.data / STORE
        self.roottab_path = self.root / ROOTTAB
        self.roottab_prev_path = self.root / ROOTTAB_PREV
        self.preserve_path = self.root / PRESERVE
        self.auth_path = self.root / AUTH
        self.pending_path = self.root / PENDING  # one action queued for the next boot
        self.policy_path = self.root / POLICY
        self.trial_path = self.root / TRIAL
        self.boots_path = self.root / BOOTS
        self.fallback_path = self.root / FALLBACK
        self.layer = self.data / LAYER
        self.layer_kernels_path = self.layer / LAYER_KERNELS
        self.layer_new = self.data / LAYER_NEW
        self.trash = self.data / TRASH
        self.home = self.data / HOME
        self.boot = self.data / BOOT
        self.bootloader_conf = self.boot / BOOTLOADER_CONF
        self.kernels = self.boot / KERNELS
        self.state = self.data / STATE
        self.state_conf = self.state / STATE_CONF
        self.captures = self.state / CAPTURES
        self._metas: dict[str, tuple[tuple[int, ...], ImageMeta]] = {}
        self._meta_cache = MetaCache(self.root / META_CACHE)

    @contextlib.contextmanager
    def locked(self, wait: float | None = None) -> Iterator[None]:
        """Hold the store's lock (flock on .root_images/.lock) for a whole action: one
        writer at a time, across processes and mount namespaces (the kernel hook in the
        running system, a command typed meanwhile, the menu). The kernel drops a flock
        when its holder dies, so a crash leaves no lock behind: the holder's line in the
        file (who, since when) is only read while the lock is really held, and is
        overwritten by the next holder."""
        if self.root.is_symlink():
            raise StoreError(f"{self.root} is a symbolic link: refused")
        with hold_flock(self.root / LOCK, LOCK_WAIT if wait is None else wait,
                        f"the store in {self.data}"):
            yield

    # existence
    def exists(self) -> bool:
        return self.root.is_dir()

    def check_dirs(self) -> None:
        """The store's own directories must be real directories on the data partition,
        not symbolic links that lead ibi to change files elsewhere."""
        for d in (self.root, self.layer, self.layer_new, self.trash, self.home, self.state,
                  self.boot):
            if d.is_symlink():
                raise StoreError(f"{d} is a symbolic link: refused",
                                 hint="ibi only works on its own directories; move it away")

    def require(self) -> None:
        if not self.data.is_dir():
            raise StoreError(f"data directory {self.data} does not exist")
        if not self.exists():
            raise StoreError(
                f"no ibi store in {self.data} (no {STORE}/)", hint="create one with: ibi init"
            )
        self.check_dirs()

    # images
    def image_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{IMAGE_EXT}"

    def meta_path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}{META_EXT}"

    def tmp_path(self, name: str, ext: str) -> Path:
        return self.root / f"{TMP_PREFIX}{name}{ext}"

    def image_names(self) -> list[str]:
        """Names that have an image file or a metadata file."""
        names = set()
        for p in self.root.iterdir():
            if p.name.startswith(".") or p.suffix not in (IMAGE_EXT, META_EXT):
                continue
            with contextlib.suppress(BadName):
                names.add(check_name(p.stem))
        return sorted(names)

    def has_image(self, name: str) -> bool:
        return self.image_path(name).is_file()

    def image_sizes(self) -> dict[str, int]:
        """Name -> size of every image file, in one pass over the store's directory
        (what a status of many images asks of each)."""
        sizes = {}
        with os.scandir(self.root) as it:
            for e in it:
                if e.name.startswith(".") or not e.name.endswith(IMAGE_EXT):
                    continue
                with contextlib.suppress(BadName, OSError):
                    name = check_name(e.name[:-len(IMAGE_EXT)])
                    if e.is_file(follow_symlinks=True):
                        sizes[name] = e.stat(follow_symlinks=True).st_size
        return sizes

    def read_meta(self, name: str) -> ImageMeta:
        """An image's metadata; parsed once per version of its file (a status reads each
        several times: every rewrite is a rename, so a new inode and ctime)."""
        path = self.meta_path(name)
        try:
            st = os.lstat(path)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        except FileNotFoundError:
            raise NotFound(f"no metadata for image {name!r} ({path.name} missing)") from None
        except OSError:
            key = None
        cached = self._metas.get(name)
        if key is not None and cached is not None and cached[0] == key:
            return cached[1]
        doc = self._meta_cache.get(name, key)
        if doc is None:
            try:
                text = read_store_text(path)
            except FileNotFoundError:
                raise NotFound(f"no metadata for image {name!r} ({path.name} missing)") \
                    from None
            try:
                doc = load_yaml(text)
            except (yaml.YAMLError, ValueError, RecursionError) as e:
                raise StoreError(f"{path.name}: unreadable metadata ({one_line(e)})") from None
            meta = meta_from_doc(doc, path.name)
            self._meta_cache.put(name, key, doc)
        else:
            meta = meta_from_doc(doc, path.name)
        if meta.name != name:
            raise StoreError(f"{path.name}: names image {meta.name!r}, expected {name!r}")
        if key is not None:
            self._metas[name] = (key, meta)
        return meta

    def save_meta_cache(self) -> None:
        """Write the metadata cache (best effort; see maintenance/metacache.py)."""
        self._meta_cache.save()

    def try_meta(self, name: str) -> ImageMeta | None:
        try:
            return self.read_meta(name)
        except (NotFound, StoreError):
            return None

    def write_meta(self, meta: ImageMeta) -> None:
        atomic_write(self.meta_path(meta.name), meta_to_yaml(meta))

    # roottab
    def read_roottab(self, prev: bool = False) -> list[str]:
        path = self.roottab_prev_path if prev else self.roottab_path
        try:
            text = read_store_text(path)
        except FileNotFoundError:
            raise StoreError(f"{path} is missing") from None
        try:
            return parse_roottab(text)
        except StoreError as e:
            raise StoreError(f"{path.name}: {e}") from None

    def write_roottab(self, names: Iterable[str]) -> None:
        """Keep the current roottab as roottab.prev, then replace roottab atomically."""
        names = [check_name(n) for n in names]
        if self.roottab_path.exists():
            try:
                old: str | None = read_store_text(self.roottab_path)
            except StoreError:
                old = None  # an unreadable roottab is not worth keeping as the fallback
            if old is not None:
                atomic_write(self.roottab_prev_path, old)
        atomic_write(self.roottab_path, render_roottab(names))

    # preserve (older stores; state.yaml replaces it)
    def read_preserve(self) -> list[str]:
        try:
            return parse_preserve(read_store_text(self.preserve_path))
        except FileNotFoundError:
            return []

    # kernels (DATA/boot/kernels/<id>/; the ones in place: StoreBoot.kernel_ids)
    def kernel_dir(self, kernel_id: str) -> Path:
        return self.kernels / check_kernel_id(kernel_id)

    def kernel_files(self, kernel_id: str) -> tuple[Path, Path]:
        d = self.kernel_dir(kernel_id)
        return d / VMLINUZ, d / INITRD

    def stray_tmp(self) -> list[Path]:
        out = sorted(p for p in self.root.iterdir() if p.name.startswith(TMP_PREFIX))
        if self.state.is_dir():  # an unfinished capture, an old one half deleted
            out += sorted(p for p in self.state.iterdir() if p.name.startswith(TMP_PREFIX))
        return out
