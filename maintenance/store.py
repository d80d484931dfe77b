"""The store's on-disk format: the one module that knows file names and layouts.

What each document holds is parsed and rendered in maintenance/records.py; the durable
writes and reads are maintenance/fsio.py's; both are named from here too (``__all__``).
See docs/FORMAT.md. Under the data directory ``D``::

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
import logging
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from .errors import BadName, NotFound, StoreError
from .fsio import (
    TMP_PREFIX,
    atomic_write,
    dump_yaml,
    durable_rename,
    fsync_dir,
    fsync_file,
    fsync_tree,
    hold_flock,
    load_yaml,
    one_line,
    read_store_text,
    remove_tree,
    tree_bytes,
    walk,
)
from .metacache import MetaCache
from .model import Fallback, ImageMeta, KernelRef, Policy, Trial
from .records import (
    FORMAT_VERSION,
    IMAGE_EXT,
    KERNEL_VERSION_MAX,
    LAYER_ID,
    MAX_TRIES,
    META_EXT,
    PENDING_ACTIONS,
    check_kernel_id,
    check_name,
    fallback_from_doc,
    fallback_to_yaml,
    kernel_from_doc,
    kernel_to_doc,
    layer_kernels_from_doc,
    layer_kernels_to_yaml,
    meta_from_doc,
    meta_from_yaml,
    meta_to_yaml,
    parse_pending,
    parse_policy,
    parse_preserve,
    parse_roottab,
    read_record,
    render_roottab,
    trial_from_doc,
    trial_to_yaml,
    utcnow,
)

log = logging.getLogger(__name__)

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
SQUASHED = "-squashed"  # the suffix of a trash entry a restore point cleared (no undo)
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
# named here too, defined where they are used: TMP_PREFIX (fsio); IMAGE_EXT, META_EXT,
# FORMAT_VERSION, MAX_TRIES, PENDING_ACTIONS (records)

# the store's names, and what the rest of ibi imports from here (defined in fsio.py and
# records.py)
__all__ = [
    "AUTH", "BOOT", "BOOTLOADER_CONF", "BOOTPLAN", "BOOTS", "CAPTURES", "CAPTURE_META",
    "FALLBACK", "FORMAT_VERSION", "FROM_TRASH", "HOME", "IMAGE_EXT", "INITRD", "KERNELS",
    "KERNEL_META", "KERNEL_VERSION_MAX", "LAYER", "LAYER_KERNELS", "LAYER_NEW", "LOCK",
    "LOCK_WAIT", "MAX_TRIES", "META_CACHE", "META_EXT", "PENDING", "PENDING_ACTIONS", "POLICY",
    "PRESERVE", "ROOTTAB", "ROOTTAB_PREV", "SQUASHED", "STASH", "STATE", "STATE_CONF", "STORE",
    "TMP_PREFIX", "TRASH", "TRIAL", "VMLINUZ", "Store", "atomic_write", "check_kernel_id",
    "check_name", "dump_yaml", "durable_rename", "fsync_dir", "fsync_file", "fsync_tree",
    "kernel_from_doc", "kernel_to_doc", "load_yaml", "meta_from_yaml", "meta_to_yaml",
    "one_line", "parse_preserve", "parse_roottab", "read_store_text", "remove_tree",
    "render_roottab", "tree_bytes", "utcnow", "walk",
]


# --- the store -----------------------------------------------------------------------

class Store:
    """Paths and primitive reads/writes of one data directory's store."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data = Path(data_dir).absolute()
        self.root = self.data / STORE
        self.roottab_path = self.root / ROOTTAB
        self.roottab_prev_path = self.root / ROOTTAB_PREV
        self.preserve_path = self.root / PRESERVE
        self.auth_path = self.root / AUTH
        self.layer = self.data / LAYER
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

    # pending: one action queued from a live system for the next boot
    @property
    def pending_path(self) -> Path:
        return self.root / PENDING

    def read_pending(self) -> dict[str, str] | None:
        try:
            text = read_store_text(self.pending_path)
        except FileNotFoundError:
            return None
        return parse_pending(text, PENDING)

    def write_pending(self, doc: dict[str, str]) -> None:
        atomic_write(self.pending_path, dump_yaml(doc))

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()
            fsync_dir(self.root)

    # the settings: .root_images/policy, written by hand (every key optional)
    @property
    def policy_path(self) -> Path:
        return self.root / POLICY

    def read_policy(self) -> Policy:
        try:
            text = read_store_text(self.policy_path)
        except FileNotFoundError:
            return Policy()
        return parse_policy(text, POLICY)

    # boot counting: the trial (the engine), the boots counted (the initramfs)
    @property
    def trial_path(self) -> Path:
        return self.root / TRIAL

    @property
    def boots_path(self) -> Path:
        return self.root / BOOTS

    @property
    def fallback_path(self) -> Path:
        return self.root / FALLBACK

    def read_trial(self) -> Trial | None:
        """The trial on record (None: none), whether or not it still holds (it holds while
        its ``stack`` is roottab)."""
        return read_record(self.trial_path, trial_from_doc, "ibi boot-ok --cancel forgets it")

    def write_trial(self, t: Trial) -> None:
        atomic_write(self.trial_path, trial_to_yaml(t))

    def clear_trial(self) -> None:
        """Forget the trial and its boots (the trial first: a power cut between the two
        leaves counted boots without a trial, which count for nothing)."""
        for p in (self.trial_path, self.boots_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        fsync_dir(self.root)

    def count_boots(self) -> int:
        """The boots the initramfs counted for the trial: one line each (``boot EPOCH``;
        a line cut short by a power cut still counts)."""
        try:
            text = read_store_text(self.boots_path)
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if line.strip())

    def read_fallback(self) -> Fallback | None:
        return read_record(self.fallback_path, fallback_from_doc)

    def write_fallback(self, f: Fallback) -> None:
        atomic_write(self.fallback_path, fallback_to_yaml(f))

    def clear_fallback(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fallback_path.unlink()
            fsync_dir(self.root)

    # preserve (older stores; state.yaml replaces it)
    def read_preserve(self) -> list[str]:
        try:
            return parse_preserve(read_store_text(self.preserve_path))
        except FileNotFoundError:
            return []

    # the writable layer
    @property
    def upper(self) -> Path:
        return self.layer / "upper"

    @property
    def work(self) -> Path:
        return self.layer / "work"

    def layer_id(self, layer: Path | None = None) -> str | None:
        try:
            text = read_store_text((layer or self.layer) / "id", "layer/id")
            text = text[:-1] if text.endswith("\n") else text  # the initramfs reads it
            # with `read -r`: anything but the id and one newline is a damaged id
        except (FileNotFoundError, NotADirectoryError):
            return None
        except StoreError as e:
            log.warning("%s: treated as a layer without an id", e)
            return None
        return text if LAYER_ID.fullmatch(text) else None

    def make_layer(self, path: Path) -> str:
        """Create an empty layer directory (upper, work, id) at ``path``; return its id."""
        path.mkdir(mode=0o755)
        (path / "upper").mkdir(mode=0o755)
        (path / "work").mkdir(mode=0o700)
        layer_id = secrets.token_hex(8)
        atomic_write(path / "id", layer_id + "\n")
        for d in (path / "upper", path / "work", path):
            fsync_dir(d)
        return layer_id

    def mark_layer_ready(self, path: Path, for_stack: Iterable[str]) -> None:
        """Record, last, the stack a prepared layer is for: recovery puts a ``layer.new``
        in place only when this marker matches roottab."""
        atomic_write(path / "stack", render_roottab(for_stack))

    def renew_layer_id(self) -> str:
        layer_id = secrets.token_hex(8)
        atomic_write(self.layer / "id", layer_id + "\n")
        return layer_id

    def layer_stack(self, layer: Path) -> list[str] | None:
        try:
            return parse_roottab(read_store_text(layer / "stack"))
        except (FileNotFoundError, StoreError):
            return None

    # kernels (DATA/boot/kernels/<id>/)
    def kernel_dir(self, kernel_id: str) -> Path:
        return self.kernels / check_kernel_id(kernel_id)

    def kernel_files(self, kernel_id: str) -> tuple[Path, Path]:
        d = self.kernel_dir(kernel_id)
        return d / VMLINUZ, d / INITRD

    def kernel_ids(self) -> list[str]:
        """Kernel directories in place (not unfinished ``.tmp-`` ones)."""
        if not self.kernels.is_dir():
            return []
        out = []
        for p in self.kernels.iterdir():
            if p.is_dir() and not p.name.startswith("."):
                with contextlib.suppress(BadName):
                    out.append(check_kernel_id(p.name))
        return sorted(out)

    def stray_kernel_tmp(self) -> list[Path]:
        if not self.kernels.is_dir():
            return []
        return sorted(p for p in self.kernels.iterdir() if p.name.startswith(TMP_PREFIX))

    def read_layer_kernels(self) -> tuple[str | None, list[str], tuple[KernelRef, ...]] | None:
        """The kernels installed in the writable layer: (layer id, stack, kernels) as
        recorded, or None when there is no (readable) record."""
        path = self.layer / LAYER_KERNELS
        try:
            return layer_kernels_from_doc(load_yaml(read_store_text(path)))
        except FileNotFoundError:
            return None
        except (OSError, StoreError, yaml.YAMLError, KeyError, ValueError, RecursionError,
                TypeError, AttributeError, BadName):
            return None  # a damaged record: as if none (the next sync rewrites it)

    def write_layer_kernels(self, layer_id: str | None, stack: Iterable[str],
                            kernels: Iterable[KernelRef]) -> None:
        atomic_write(self.layer / LAYER_KERNELS, layer_kernels_to_yaml(layer_id, stack, kernels))

    def clear_layer_kernels(self) -> bool:
        try:
            (self.layer / LAYER_KERNELS).unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.layer)
        return True

    def trash_entries(self) -> list[Path]:
        """The set-aside layers; a ``trash`` that is not a real directory (a symbolic link
        out of the store, say) is refused, never followed."""
        try:
            st = self.trash.lstat()
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{self.trash} is not a directory (a symbolic link?): refused",
                             hint="move it away by hand; ibi deletes only what is in the store")
        return sorted(p for p in self.trash.iterdir())

    def stray_tmp(self) -> list[Path]:
        out = sorted(p for p in self.root.iterdir() if p.name.startswith(TMP_PREFIX))
        if self.state.is_dir():  # an unfinished capture, an old one half deleted
            out += sorted(p for p in self.state.iterdir() if p.name.startswith(TMP_PREFIX))
        return out

    def new_trash_slot(self, layer_id: str | None, squashed: bool = False) -> Path:
        """Where a layer set aside goes: ``<UTC stamp>-<layer id>``; a layer a restore
        point holds (being deleted) gets ``-squashed``, and is never put back."""
        self.trash.mkdir(exist_ok=True)
        self.trash_entries()  # a real directory
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        same = [p for p in self.trash.iterdir() if p.name.startswith(stamp)]
        seq = f".{len(same) + 1:03d}" if same else ""  # sorts after the ones before it
        slot = self.trash / f"{stamp}{seq}-{layer_id or secrets.token_hex(4)}"
        return slot.with_name(slot.name + SQUASHED) if squashed else slot

    def set_aside_layers(self) -> list[tuple[Path, str, list[str]]]:
        """The layers Restore System, Roll back and Switch set aside that can be put back,
        newest first: (entry, layer id, the stack it was used on). A layer a restore point
        cleared, or one without its id, stack or directories, is left out."""
        out = []
        for p in reversed(self.trash_entries()):
            if p.name.endswith(SQUASHED) or p.is_symlink() or not p.is_dir():
                continue
            lid, stack = self.layer_id(p), self.layer_stack(p)
            if lid and stack and all((p / d).is_dir() and not (p / d).is_symlink()
                                     for d in ("upper", "work")):
                out.append((p, lid, stack))
        return out
