"""Durable file operations on the data partition, and the YAML every ibi file is written in.

Nothing here knows the store's layout (maintenance/store.py does) or what its documents
hold (maintenance/records.py): writing a file so that a power cut leaves the old version or
the new one, reading a small file without following a link, deleting or measuring a tree,
holding a lock and telling who else holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from .errors import InUse, StoreError

TMP_PREFIX = ".tmp-"  # work in progress (an atomic write's temp file; removed by recovery)
MAX_STORE_TEXT = 1 << 20  # roottab, metadata, pending, ids: small text files


# --- durable writes ------------------------------------------------------------------

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


# --- reads, trees ------------------------------------------------------------------

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


# --- YAML ---------------------------------------------------------------------------

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


def one_line(e: object, limit: int = 160) -> str:
    """An exception's text on one line (yaml's carry a pointer on several), cut short."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the lock ---------------------------------------------------------------------

@contextlib.contextmanager
def hold_flock(path: Path, wait: float, what: str) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created, never followed if a symbolic link),
    waiting at most ``wait`` seconds for its holder; then InUse names that holder, changing
    ``what``. The holder's line (who, since when) is written into the file for that
    message; the kernel drops the lock when its holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        end = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise InUse(f"busy: {_lock_holder(fd)} is changing {what} "
                                f"(waited {wait:g} s)",
                                hint="try again when it is done") from None
                time.sleep(0.2)
        with contextlib.suppress(OSError):  # who holds it, for the busy message
            os.ftruncate(fd, 0)
            os.pwrite(fd, _holder_line().encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


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
