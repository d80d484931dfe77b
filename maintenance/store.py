"""The store's on-disk format: the one module that knows file names and layouts.

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
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import yaml

from .errors import BadName, InUse, NotFound, StoreError
from .model import Fallback, ImageMeta, KernelRef, Kind, Policy, Trial

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
MAX_TRIES = 20
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
TMP_PREFIX = ".tmp-"
META_CACHE = ".meta-cache.json"  # derived, see Store._cache_entries
IMAGE_EXT = ".sqfs"
META_EXT = ".yaml"
FORMAT_VERSION = 1
MAX_STORE_TEXT = 1 << 20  # roottab, metadata, pending, ids: small text files

PENDING_ACTIONS = ("restore", "incremental", "full", "rollback", "undo")

_LAYER_ID = re.compile(r"^[0-9a-f]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a safe image name, else raise BadName."""
    if not _NAME.fullmatch(name) or name.endswith((".tmp", IMAGE_EXT, META_EXT)):
        raise BadName(
            f"bad image name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


# --- durable file operations ---------------------------------------------------------

def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and directory under ``path`` (not following symlinks)."""
    for root, _dirs, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            if os.path.isfile(p) and not os.path.islink(p):
                fsync_file(Path(p))
        fsync_dir(Path(root))


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``: temp file, fsync, rename, fsync of the directory."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def durable_rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    fsync_dir(dst.parent)
    if src.parent != dst.parent:
        fsync_dir(src.parent)


def _command_of(pid: int | str = "self") -> str:
    """A process's command line, shortened: ``ibi create --incremental``."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return ""
    words = [os.path.basename(a) for a in argv[:1]] + argv[1:]
    if words and words[0].startswith("python") and len(words) > 1:
        words = words[2:] if words[1] == "-m" else [os.path.basename(words[1]), *words[2:]]
        if words and words[0] == "maintenance.cli":
            words[0] = "ibi"
    return " ".join(" ".join(w for w in words if not w.startswith("/run/ibi")).split())[:120]


def _holder_line() -> str:
    return f"{os.getpid()} {int(time.time())} {_command_of() or 'ibi'}\n"


def _flock_holder(fd: int) -> int | None:
    """The process holding a flock on the file open as ``fd`` (from /proc/locks)."""
    st = os.fstat(fd)
    ident = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                w = line.split()
                if len(w) > 5 and w[1] == "FLOCK" and w[5] == ident and w[4].isdigit():
                    return int(w[4])
    except OSError:
        pass
    return None


def _lock_holder(fd: int) -> str:
    """Who holds the lock: the kernel's /proc/locks says which process, the line its
    holder wrote into the file since when (a line left by a crash names a dead process
    and is ignored)."""
    pid = _flock_holder(fd)
    since = ""
    try:
        rpid, stamp, _cmd = os.pread(fd, 512, 0).decode(errors="replace").split(" ", 2)
        if pid is not None and int(rpid) == pid:
            when = dt.datetime.fromtimestamp(int(stamp), dt.UTC).strftime("%H:%M:%S UTC")
            since = f", since {when}"
    except (OSError, ValueError):
        pass
    if pid is None or pid == 0:
        return "another ibi command"
    return f"{_command_of(pid) or 'a process'} (process {pid}{since})"


# --- text formats --------------------------------------------------------------------

def parse_roottab(text: str) -> list[str]:
    """Image names, bottom first. ``#`` starts a comment; blank lines are ignored."""
    names: list[str] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            check_name(line)
        except BadName as e:
            raise StoreError(f"roottab line {n}: {e}") from None
        if line in names:
            raise StoreError(f"roottab line {n}: image {line!r} listed twice")
        names.append(line)
    if not names:
        raise StoreError("roottab names no image")
    return names


def render_roottab(names: Iterable[str]) -> str:
    return (
        "# ibi roottab: the active image stack, bottom first, one image name per line.\n"
        "# The previous version is kept in roottab.prev. Lines after '#' are comments.\n"
        + "".join(f"{n}\n" for n in names)
    )


def parse_preserve(text: str) -> list[str]:
    paths = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            if not line.startswith("/") or ".." in line.split("/") or \
                    any(ord(c) < 32 or ord(c) == 127 for c in line):
                raise StoreError(f"preserve: {line!r} is not an absolute path")
            paths.append(os.path.normpath(line))
    return paths


def meta_to_yaml(meta: ImageMeta) -> str:
    doc = {
        "format": FORMAT_VERSION,
        "name": meta.name,
        "kind": meta.kind.value,
        "created": _stamp(meta.created),
        "sha256": meta.sha256,
        "size": meta.size,
        "description": meta.description,
        "parent": meta.parent,
        "stack": list(meta.stack),
        "source_layer": meta.source_layer,
        "source_stamp": meta.source_stamp,
        "compressor": meta.compressor,
    }
    if meta.kernels:
        doc["kernels"] = [kernel_to_doc(k) for k in meta.kernels]
    if meta.pinned:
        doc["pinned"] = True
    return dump_yaml(doc)


_KERNEL_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+~-]{0,79}$")
KERNEL_VERSION_MAX = 64  # uname -r is at most 64 characters


def check_kernel_id(text: str) -> str:
    """A kernel version or directory name: safe in a path and in GRUB's menu."""
    if not _KERNEL_ID.fullmatch(text):
        raise BadName(f"bad kernel name {text!r}")
    return text


def kernel_to_doc(k: KernelRef) -> dict[str, object]:
    return {"version": k.version, "id": k.id, "vmlinuz_sha256": k.vmlinuz_sha256,
            "initrd_sha256": k.initrd_sha256, "size": k.size,
            "source_initrd_sha256": k.source_initrd_sha256}


def kernel_from_doc(doc: object) -> KernelRef:
    if not isinstance(doc, dict):
        raise ValueError("a kernel entry is not a mapping")
    return KernelRef(version=check_kernel_id(_str(doc, "version")),
                     id=check_kernel_id(_str(doc, "id")),
                     vmlinuz_sha256=_hex(_str(doc, "vmlinuz_sha256"), "vmlinuz_sha256"),
                     initrd_sha256=_hex(_str(doc, "initrd_sha256"), "initrd_sha256"),
                     size=_int(doc.get("size"), "size"),
                     source_initrd_sha256=_hex(_opt_str(doc, "source_initrd_sha256") or "",
                                               "source_initrd_sha256", empty=True))


class _Dumper(yaml.SafeDumper):
    """yaml.safe_dump's, but a string holding a character YAML reads as a line break (NEL,
    U+2028, U+2029) is written double-quoted, escaped: PyYAML writes them raw in a
    single-quoted string and reads them back as a space."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(doc: object) -> str:
    """The YAML text of every file ibi writes (keys in order, UTF-8 kept, line breaks
    inside strings escaped so that they read back as written)."""
    return str(yaml.dump(doc, Dumper=_Dumper, sort_keys=False, allow_unicode=True))


# libyaml's parser where PyYAML was built with it (Debian's python3-yaml is): the same safe
# constructors, about ten times faster than the pure-Python parser (status reads every
# image's metadata)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str) -> object:
    """``yaml.safe_load``, whose every failure on hostile text (a bad explicit tag raises
    IndexError or AttributeError, an impossible date ValueError, deep nesting
    RecursionError) becomes one ValueError with a one-line message."""
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except (yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError,
            IndexError, AttributeError, KeyError) as e:
        raise ValueError(f"not valid YAML: {one_line(e)}") from None


def _str(doc: dict[str, object], key: str, default: str | None = None) -> str:
    v = doc.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"{key!r} is not a string" if key in doc else f"no {key!r}")
    return v


def _opt_str(doc: dict[str, object], key: str) -> str | None:
    v = doc.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key!r} is not a string")
    return v


def _int(v: object, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 63:
        raise ValueError(f"{key!r} is not a size")
    return v


def _bool(doc: dict[str, object], key: str) -> bool:
    v = doc.get(key, False)
    if not isinstance(v, bool):
        raise ValueError(f"{key!r} is not true or false")
    return v


def _stack(doc: dict[str, object], key: str) -> tuple[str, ...]:
    v = doc.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        raise ValueError(f"{key!r} is not a list of image names")
    return tuple(check_name(n) for n in v)


def _when(doc: dict[str, object], key: str) -> dt.datetime:
    v = doc.get(key)
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if not isinstance(v, dt.datetime):
        raise ValueError(f"{key!r} is not a date and time")
    # in UTC, as written back (a far-off offset that leaves the calendar raises here)
    return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


R = TypeVar("R")


def _read_record(path: Path, parse: Callable[[dict[str, object]], R],
                 hint: str | None = None) -> R | None:
    """A small YAML record of the store (trial, fallback): None when there is none; a
    damaged one raises StoreError naming it, in one line."""
    try:
        text = read_store_text(path)
    except FileNotFoundError:
        return None
    try:
        doc = load_yaml(text)
        if not isinstance(doc, dict):
            raise ValueError("not a mapping")
        check_format(doc)
        return parse(doc)
    except (yaml.YAMLError, KeyError, ValueError, TypeError, OverflowError, BadName) as e:
        raise StoreError(f"{path.name}: unreadable ({one_line(e)})", hint=hint) from None


def _line(text: str, limit: int = 300) -> str:
    """Free text shown in one line (status, the menu): control characters and line breaks
    become spaces; no lone surrogates."""
    text = "".join(" " if (ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029")
                   else c for c in text)
    text = " ".join(text.split())[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


def _stamp(when: dt.datetime) -> str:
    """UTC to the second; isoformat pads the year to four digits (strftime's %Y does not,
    so year 999 would not read back)."""
    return when.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def _hex(v: str, key: str, empty: bool = False) -> str:
    if (v or not empty) and not _HEX.fullmatch(v):
        raise ValueError(f"{key!r} is not a hexadecimal digest")
    return v


def check_format(doc: dict[str, object]) -> None:
    """Refuse a document written by a newer ibi (``format`` above ours)."""
    v = doc.get("format", FORMAT_VERSION)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"format {v!r} is not a version number")
    if v > FORMAT_VERSION:
        raise ValueError(f"format {v} is newer than this ibi understands ({FORMAT_VERSION}):"
                         " use a newer ibi")


_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HEX = re.compile(r"^[0-9a-f]{1,128}$")


def meta_from_yaml(text: str, where: str) -> ImageMeta:
    try:
        doc = load_yaml(text)
    except (yaml.YAMLError, ValueError, RecursionError) as e:
        raise StoreError(f"{where}: unreadable metadata ({one_line(e)})") from None
    return meta_from_doc(doc, where)


def meta_from_doc(doc: object, where: str) -> ImageMeta:
    """An image's metadata from its parsed YAML document (checked field by field)."""
    try:
        if not isinstance(doc, dict):
            raise ValueError("not a mapping")
        check_format(doc)
        created = doc.get("created")
        if isinstance(created, str):
            created = dt.datetime.fromisoformat(created.replace("Z", "+00:00"))
        if not isinstance(created, dt.datetime):
            raise ValueError("'created' is not a date and time")
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        digest = _str(doc, "sha256")
        if not _SHA256.fullmatch(digest):
            raise ValueError("'sha256' is not a SHA-256 digest")
        stack = doc.get("stack") or []
        if not isinstance(stack, list) or not all(isinstance(n, str) for n in stack):
            raise ValueError("'stack' is not a list of image names")
        ks = doc.get("kernels") or []
        if not isinstance(ks, list):
            raise ValueError("'kernels' is not a list")
        stamp = doc.get("source_stamp")
        parent = _opt_str(doc, "parent")
        return ImageMeta(
            name=check_name(_str(doc, "name")),
            kind=Kind(_str(doc, "kind")),
            created=created,
            sha256=digest,
            size=_int(doc.get("size"), "size"),
            description=_str(doc, "description", "") if doc.get("description") else "",
            parent=check_name(parent) if parent else None,
            stack=tuple(check_name(n) for n in stack),
            source_layer=_opt_str(doc, "source_layer"),
            source_stamp=None if stamp is None else _int(stamp, "source_stamp"),
            compressor=_str(doc, "compressor", "zstd") if doc.get("compressor") else "zstd",
            kernels=tuple(kernel_from_doc(k) for k in ks),
            pinned=_bool(doc, "pinned"),
        )
    except (yaml.YAMLError, KeyError, ValueError, TypeError, AttributeError, OverflowError,
            RecursionError, BadName) as e:
        raise StoreError(f"{where}: unreadable metadata ({one_line(e)})") from None


def one_line(e: object, limit: int = 160) -> str:
    """An exception's text on one line (yaml's carry a pointer on several), cut short."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def read_store_text(path: Path, label: str | None = None) -> str:
    """A store file's text, not following a symlink; a file that is not UTF-8 text, not a
    regular file or unreadable raises StoreError naming it (FileNotFoundError passes)."""
    name = label or path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StoreError(f"{name} is a symbolic link: refused") from None
        raise StoreError(f"{name}: cannot read ({e.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StoreError(f"{name} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_STORE_TEXT + 1)
    except OSError as e:
        raise StoreError(f"{name}: cannot read ({e.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_STORE_TEXT:
        raise StoreError(f"{name} is too large to be an ibi file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StoreError(f"{name} is not UTF-8 text (byte {e.start})") from None


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
        self._disk_cache: dict[str, object] | None = None
        self._disk_cache_dirty = False

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
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                     0o600)
        try:
            wait = LOCK_WAIT if wait is None else wait
            end = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= end:
                        raise InUse(f"busy: {_lock_holder(fd)} is changing the store in "
                                    f"{self.data} (waited {wait:g} s)",
                                    hint="try again when it is done") from None
                    time.sleep(0.2)
            with contextlib.suppress(OSError):  # who holds it, for the busy message
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder_line().encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock

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
        doc = self._cached_doc(name, key)
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
            self._cache_doc(name, key, doc)
        else:
            meta = meta_from_doc(doc, path.name)
        if meta.name != name:
            raise StoreError(f"{path.name}: names image {meta.name!r}, expected {name!r}")
        if key is not None:
            self._metas[name] = (key, meta)
        return meta

    # The metadata cache (META_CACHE): each image's parsed YAML document as JSON, keyed by
    # its file's identity (inode, size, mtime, ctime; every rewrite of a metadata file is a
    # rename, so a new inode). JSON reads in a fraction of YAML's time: a status of 100
    # restore points, whose metadata lists their whole stacks, parses ~7,500 YAML scalars.
    # Derived data only: a missing, stale or unreadable cache is ignored and rewritten,
    # and nothing but this cache reads it.
    def _cache_entries(self) -> dict[str, object]:
        if self._disk_cache is None:
            self._disk_cache = {}
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads((self.root / META_CACHE).read_bytes())
                if isinstance(doc, dict) and doc.get("v") == 1 and \
                        isinstance(doc.get("metas"), dict):
                    self._disk_cache = doc["metas"]
        return self._disk_cache

    def _cached_doc(self, name: str, key: tuple[int, ...] | None) -> object | None:
        if key is None:
            return None
        entry = self._cache_entries().get(name)
        if isinstance(entry, dict) and entry.get("key") == list(key[1:]):
            return entry.get("doc")
        return None

    def _cache_doc(self, name: str, key: tuple[int, ...] | None, doc: object) -> None:
        if key is None:
            return
        try:
            if json.loads(json.dumps(doc)) != doc:  # only what JSON gives back unchanged
                return
        except (TypeError, ValueError, RecursionError):
            return
        self._cache_entries()[name] = {"key": list(key[1:]), "doc": doc}
        self._disk_cache_dirty = True

    def save_meta_cache(self) -> None:
        """Write the metadata cache if this process parsed any metadata file, keeping only
        images that still have one. Best effort: a read-only store is left as it is."""
        if not self._disk_cache_dirty or self._disk_cache is None:
            return
        self._disk_cache_dirty = False
        live = {p.name[:-len(META_EXT)] for p in self.root.glob(f"*{META_EXT}")}
        doc = {"v": 1, "metas": {n: e for n, e in self._disk_cache.items() if n in live}}
        tmp = self.root / f"{META_CACHE}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.root / META_CACHE)
        except OSError as e:
            log.debug("metadata cache not written: %s", e)
            with contextlib.suppress(OSError):
                tmp.unlink()

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
            doc = load_yaml(read_store_text(self.pending_path))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise StoreError(f"{PENDING}: unreadable ({e})") from None
        if not isinstance(doc, dict) or doc.get("action") not in PENDING_ACTIONS:
            raise StoreError(f"{PENDING}: not a known action",
                             hint="see it with: cat; cancel it with: ibi pending --cancel")
        out = {}
        for k, v in doc.items():
            if v is None:
                continue
            if not isinstance(k, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
                raise StoreError(f"{PENDING}: {k!r} is not a plain value",
                                 hint="cancel it with: ibi pending --cancel")
            out[k] = str(v)
        if "name" in out:
            try:
                check_name(out["name"])
            except BadName as e:
                raise StoreError(f"{PENDING}: {e}",
                                 hint="cancel it with: ibi pending --cancel") from None
        return out

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
            doc = load_yaml(read_store_text(self.policy_path))
        except FileNotFoundError:
            return Policy()
        except ValueError as e:
            raise StoreError(f"{POLICY}: unreadable ({e})") from None
        if doc is None:
            return Policy()
        try:
            if not isinstance(doc, dict):
                raise ValueError("not a mapping")
            check_format(doc)
            unknown = set(doc) - {"format", "boot_tries", "keep_last", "keep_days",
                                  "max_depth"}
            if unknown:
                raise ValueError(f"unknown setting {sorted(map(str, unknown))[0]!r}")
            d = Policy()
            p = Policy(
                boot_tries=_int(doc.get("boot_tries", d.boot_tries), "boot_tries"),
                keep_last=_int(doc.get("keep_last", d.keep_last), "keep_last"),
                keep_days=_int(doc.get("keep_days", d.keep_days), "keep_days"),
                max_depth=_int(doc.get("max_depth", d.max_depth), "max_depth"))
            if p.boot_tries > MAX_TRIES:
                raise ValueError(f"'boot_tries' is more than {MAX_TRIES}")
            if p.max_depth < 2:
                raise ValueError("'max_depth' is less than 2")
            return p
        except (ValueError, TypeError) as e:
            raise StoreError(f"{POLICY}: {one_line(e)}",
                             hint="see docs/FORMAT.md (Updates); fix or remove the file") from None

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
        def parse(doc: dict[str, object]) -> Trial:
            tries = _int(doc.get("tries"), "tries")
            if not 1 <= tries <= MAX_TRIES:
                raise ValueError(f"'tries' is not 1..{MAX_TRIES}")
            layer = _opt_str(doc, "good_layer")
            if layer is not None and not _LAYER_ID.fullmatch(layer):
                raise ValueError("'good_layer' is not a layer id")
            return Trial(_stack(doc, "stack"), _stack(doc, "good"), tries,
                         _when(doc, "armed"), _line(_str(doc, "reason")) or "unknown", layer,
                         _line(_str(doc, "failure", "")) if doc.get("failure") else "")
        return _read_record(self.trial_path, parse, "ibi boot-ok --cancel forgets it")

    def write_trial(self, t: Trial) -> None:
        doc: dict[str, object] = {
            "format": FORMAT_VERSION, "stack": list(t.stack), "good": list(t.good),
            "tries": t.tries, "armed": _stamp(t.armed), "reason": t.reason}
        if t.good_layer:
            doc["good_layer"] = t.good_layer
        if t.failure:
            doc["failure"] = t.failure
        atomic_write(self.trial_path, dump_yaml(doc))

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
        def parse(doc: dict[str, object]) -> Fallback:
            return Fallback(_stack(doc, "failed"), _stack(doc, "good"),
                            _int(doc.get("boots"), "boots"), _when(doc, "at"),
                            _line(_str(doc, "why", "")) if doc.get("why") else "")
        return _read_record(self.fallback_path, parse)

    def write_fallback(self, f: Fallback) -> None:
        doc: dict[str, object] = {
            "format": FORMAT_VERSION, "failed": list(f.failed), "good": list(f.good),
            "boots": f.boots, "at": _stamp(f.at)}
        if f.why:
            doc["why"] = f.why
        atomic_write(self.fallback_path, dump_yaml(doc))

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
        return text if _LAYER_ID.fullmatch(text) else None

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
            doc = load_yaml(read_store_text(path))
            if not isinstance(doc, dict):
                return None
            return (str(doc["layer"]) if doc.get("layer") else None,
                    [check_name(str(n)) for n in doc.get("stack") or ()],
                    tuple(kernel_from_doc(k) for k in doc.get("kernels") or ()))
        except FileNotFoundError:
            return None
        except (OSError, StoreError, yaml.YAMLError, KeyError, ValueError, RecursionError,
                TypeError, AttributeError, BadName):
            return None  # a damaged record: as if none (the next sync rewrites it)

    def write_layer_kernels(self, layer_id: str | None, stack: Iterable[str],
                            kernels: Iterable[KernelRef]) -> None:
        doc = {"format": 1, "layer": layer_id, "stack": list(stack),
               "kernels": [kernel_to_doc(k) for k in kernels]}
        atomic_write(self.layer / LAYER_KERNELS, dump_yaml(doc))

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


def tree_bytes(path: Path) -> int:
    """Allocated bytes under ``path`` (like du), not following symlinks or mounts."""
    total = 0
    for entry in walk(path):
        with contextlib.suppress(OSError):
            total += entry.stat(follow_symlinks=False).st_blocks * 512
    return total


def walk(path: Path) -> Iterator[os.DirEntry[str]]:
    """Every entry below ``path`` (depth first), staying on one filesystem."""
    try:
        dev = path.stat().st_dev
        stack = [os.scandir(path)]
    except OSError:
        return
    while stack:
        it = stack[-1]
        entry = next(it, None)
        if entry is None:
            it.close()
            stack.pop()
            continue
        yield entry
        try:
            if entry.is_dir(follow_symlinks=False) and entry.stat(
                follow_symlinks=False
            ).st_dev == dev:
                stack.append(os.scandir(entry.path))
        except OSError:
            continue


def remove_tree(path: Path) -> None:
    """Delete ``path`` entirely (a set-aside layer, a stray temp)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
