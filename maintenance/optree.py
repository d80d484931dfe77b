"""Tree access for the registry operators (operators.py): reading and writing a system's
files inside a directory that holds that system (a mounted tree), never the running
root's paths. Every read resolves symlinks inside the tree, and every write refuses a
parent directory that is a symlink, so nothing outside the tree is read or written.
:class:`Invalid` is what an operator raises when the files hold no valid value.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

MAX_FILE = 64 << 10  # a registry file larger than this is not a config file
MAX_LINKS = 40

Values = dict[str, str]


class Invalid(Exception):
    """The files hold no valid value (deleted, empty, unparsable), or a value is malformed.
    The message is one line: "deleted", "empty", "unparsable: ..." or what is wrong."""


# ---------------------------------------------------------------------- tree access

def resolve(tree: Path, path: str, follow_last: bool = True) -> Path | None:
    """``path`` (absolute, as the tree's system sees it) as a path inside ``tree``,
    following symlinks as a chroot would (absolute targets from the tree's root, ``..``
    stopping at it). None when the links loop."""
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        here = tree.joinpath(*done, part)
        if (parts or follow_last) and here.is_symlink():
            links += 1
            if links > MAX_LINKS:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            parts = [p for p in target.split("/") if p and p != "."] + parts
            continue
        done.append(part)
    return tree.joinpath(*done)


def read_text(tree: Path, path: str) -> str | None:
    """The text of ``path`` in the tree (symlinks resolved inside it); None if absent."""
    p = resolve(tree, path)
    if p is None:
        raise Invalid(f"unparsable: {path} is a symlink loop")
    try:
        with open(p, "rb") as f:
            data = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise Invalid(f"unparsable: {path} is a directory") from None
    except OSError as e:
        raise Invalid(f"unparsable: {path}: {e.strerror}") from None
    if len(data) > MAX_FILE:
        raise Invalid(f"unparsable: {path} is larger than {MAX_FILE >> 10} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Invalid(f"unparsable: {path} is not UTF-8 text") from None


def real_parent(tree: Path, path: str) -> Path:
    """The directory that holds ``path`` in the tree, checked to be a chain of real
    directories (no symlink on the way that could lead out of the tree)."""
    rel = path.strip("/").split("/")
    here = tree
    for part in rel[:-1]:
        here = here / part
        st = os.lstat(here)
        if stat.S_ISLNK(st.st_mode):
            raise Invalid(f"/{os.path.relpath(here, tree)} is a symlink in this system: "
                          f"{path} is not written through it")
        if not stat.S_ISDIR(st.st_mode):
            raise Invalid(f"/{os.path.relpath(here, tree)} is not a directory")
    return here


def write_file(tree: Path, path: str, text: str, mode: int | None = None,
               new_mode: int = 0o644) -> bool:
    """Replace ``path`` in the tree with ``text`` (temp file, fsync, rename). Keeps the
    mode of the file it replaces unless ``mode`` is given (``new_mode`` for a new file).
    A file that already holds ``text`` is left alone. Returns whether it was written."""
    parent = real_parent(tree, path)
    dest = parent / path.rsplit("/", 1)[-1]
    old = None
    with contextlib.suppress(FileNotFoundError):
        old = os.lstat(dest)
    if mode is None:
        mode = stat.S_IMODE(old.st_mode) if old and stat.S_ISREG(old.st_mode) else new_mode
    if old is not None and stat.S_ISDIR(old.st_mode):
        raise Invalid(f"{path} is a directory in this system")
    if old is not None and stat.S_ISREG(old.st_mode) and stat.S_IMODE(old.st_mode) == mode \
            and old.st_size == len(text.encode()):
        with contextlib.suppress(OSError), open(dest, encoding="utf-8") as f:
            if f.read() == text:
                return False  # already so (the image's own file stays: nothing in the layer)
    def make(tmp: Path) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
    _put(dest, make)
    return True


def _put(dest: Path, make: Callable[[Path], None]) -> None:
    """Make a temporary entry beside ``dest`` with ``make`` and rename it over ``dest``
    (the temporary one is removed if anything fails)."""
    tmp = dest.parent / f".ibi-{secrets.token_hex(4)}"
    try:
        make(tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_symlink(tree: Path, path: str, target: str) -> bool:
    parent = real_parent(tree, path)
    dest = parent / path.rsplit("/", 1)[-1]
    with contextlib.suppress(OSError):
        if os.readlink(dest) == target:
            return False
    if dest.is_dir() and not dest.is_symlink():
        raise Invalid(f"{path} is a directory in this system")
    _put(dest, lambda tmp: os.symlink(target, tmp))
    return True


def exists(tree: Path, path: str) -> bool:
    return os.path.lexists(tree / path.lstrip("/"))


def one_line(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def raw(tree: Path, path: str) -> str:
    """A one-line look at whatever ``path`` holds now (for a file that did not parse)."""
    p = tree / path.lstrip("/")
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return "(deleted)"
    if stat.S_ISLNK(st.st_mode):
        return f"-> {os.readlink(p)}"
    if not stat.S_ISREG(st.st_mode):
        return "(not a file)"
    try:
        text = read_text(tree, path) or ""
    except Invalid as e:
        return str(e)
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return one_line(" / ".join(lines)) if lines else "(empty)"
