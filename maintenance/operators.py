"""Registry operators: typed values parsed from a system's files and rendered back.

A registry operator owns a few files of a system tree (``paths``). ``read(tree)`` parses
them into values (``{field: text}``) or raises :class:`Invalid` when they hold none (a file
deleted, empty or unparsable); ``write(tree, values)`` renders the values into another
tree, in the layout *that* tree uses (a newer base without /etc/timezone gets only
/etc/localtime). Because values, not bytes, are kept, the file is always well formed.

An owner adds one by subclassing :class:`RegistryOperator` in an installed Python package
and naming the class in the entry point group ``ibi.state_operators`` (docs/FORMAT.md,
"State"). Trees are directories (a mounted system), never the running root's paths:
every read resolves symlinks inside the tree, and every write refuses a parent directory
that is a symlink, so nothing outside the tree is read or written.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from .errors import StoreError

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


# ---------------------------------------------------------------------- the interface

class RegistryOperator:
    """Parses some files of a system into values and renders them back."""

    name: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]  # the files it owns (absolute, as the system sees them)
    fields: ClassVar[dict[str, str]]  # field -> one-line help (syntax, example)
    required: ClassVar[tuple[str, ...]] = ()  # fields a valid set of values must have
    optional: ClassVar[tuple[str, ...]] = ()  # paths written only where the system has them

    def read(self, tree: Path) -> Values:
        """The values the tree's files hold; :class:`Invalid` if none."""
        raise NotImplementedError

    def check(self, values: Mapping[str, str]) -> None:
        """Raise :class:`Invalid` naming the field if a value is malformed."""
        for f in self.required:
            if not values.get(f):
                raise Invalid(f"{self.name}.{f} is required")
        for f in values:
            if f not in self.fields:
                raise Invalid(f"{self.name} has no field {f!r} "
                              f"(fields: {', '.join(self.fields)})")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        """Render ``values`` into the tree's files; return the paths changed. Files that
        already hold the values are left as they are (format, comments, link style)."""
        raise NotImplementedError

    def holds(self, tree: Path, values: Mapping[str, str]) -> bool:
        """Whether the tree's files already hold ``values``."""
        try:
            return self.read(tree) == dict(values)
        except Invalid:
            return False

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        """One line per owned path: what the values make of it."""
        raise NotImplementedError

    def look(self, tree: Path, path: str) -> str:
        """One line: what ``path`` holds now, when the files hold no valid value."""
        return raw(tree, path)


# ---------------------------------------------------------------------- built-in operators

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")  # hostname(5): dotted names too, <= 64
_FQDN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
LOOPBACK_NAME = "127.0.1.1"


class Hostname(RegistryOperator):
    name = "hostname"
    paths = ("/etc/hostname", "/etc/hosts")
    optional = ("/etc/hosts",)
    fields: ClassVar[dict[str, str]] = {
        "name": "the host name: letters, digits, '-' and '.', at most 64 (e.g. office-pc)",
              "fqdn": "optional: the full name on the 127.0.1.1 line of /etc/hosts "
                      "(e.g. office-pc.example.org)"}
    required = ("name",)

    def read(self, tree: Path) -> Values:
        text = read_text(tree, "/etc/hostname")
        if text is None:
            raise Invalid("deleted")
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise Invalid("empty")
        values = {"name": lines[0]}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        with contextlib.suppress(Invalid):
            for names in _loopback_names(read_text(tree, "/etc/hosts") or ""):
                if names and names[0].startswith(values["name"] + ".") \
                        and _FQDN.fullmatch(names[0]):
                    values["fqdn"] = names[0]
        return values

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        name = values["name"]
        if not _HOSTNAME.fullmatch(name) or len(name) > 64:
            raise Invalid(f"hostname.name {name!r}: letters, digits, '-' and '.' only, at "
                          "most 64, no label starting or ending with '-'")
        fqdn = values.get("fqdn")
        if fqdn and (not _FQDN.fullmatch(fqdn) or len(fqdn) > 253
                     or not fqdn.startswith(name + ".")):
            raise Invalid(f"hostname.fqdn {fqdn!r}: must be {name}.<domain>")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):
            return []
        changed = []
        if write_file(tree, "/etc/hostname", values["name"] + "\n"):
            changed.append("/etc/hostname")
        hosts = read_text(tree, "/etc/hosts")
        if hosts is not None and write_file(  # a system without the file: not made up
                tree, "/etc/hosts", _with_loopback(hosts, self._names(values))):
            changed.append("/etc/hosts")
        return changed

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/hostname": values["name"],
                "/etc/hosts": f"{LOOPBACK_NAME} {self._names(values)}"}

    def look(self, tree: Path, path: str) -> str:
        if path != "/etc/hosts":
            return raw(tree, path)
        try:
            lines = _loopback_names(read_text(tree, path) or "")
        except Invalid as e:
            return str(e)
        return f"{LOOPBACK_NAME} {' '.join(lines[0])}" if lines else raw(tree, path)

    @staticmethod
    def _names(values: Mapping[str, str]) -> str:
        fqdn = values.get("fqdn")
        return f"{fqdn} {values['name']}" if fqdn else values["name"]


def _loopback_names(hosts: str) -> list[list[str]]:
    out = []
    for line in hosts.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == LOOPBACK_NAME:
            out.append(words[1:])
    return out


def _with_loopback(hosts: str, names: str) -> str:
    """``hosts`` with the host's names on its first 127.0.1.1 line (added after the
    127.0.0.1 line, or first, when it has none). The line's other names (aliases an owner
    added after the host's) and its comment stay, as does the rest of the file."""
    lines = hosts.splitlines()
    out: list[str] = []
    placed = False
    for line in lines:
        body, hash_, comment = line.partition("#")
        words = body.split()
        if words and words[0] == LOOPBACK_NAME and not placed:
            old = words[1:]
            # the host's own names were the first one or two (fqdn then name); the rest
            # are aliases
            n = 2 if len(old) >= 2 and old[0].startswith(old[1] + ".") else min(1, len(old))
            new = f"{LOOPBACK_NAME}\t{' '.join([names, *old[n:]])}"
            out.append(new + (f" {hash_}{comment}" if hash_ else ""))
            placed = True
            continue
        out.append(line)
    new = f"{LOOPBACK_NAME}\t{names}"
    if not placed:
        at = next((i + 1 for i, ln in enumerate(out) if ln.split()[:1] == ["127.0.0.1"]), 0)
        out.insert(at, new)
    return "\n".join(out) + "\n"


ZONEINFO = "/usr/share/zoneinfo"
_ZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+.-]+)*$")


class Timezone(RegistryOperator):
    name = "timezone"
    paths = ("/etc/localtime", "/etc/timezone")
    optional = ("/etc/timezone",)
    fields: ClassVar[dict[str, str]] = {
        "zone": "a zone of /usr/share/zoneinfo (e.g. Europe/Berlin, Etc/UTC)"}
    required = ("zone",)

    def read(self, tree: Path) -> Values:
        link = tree / "etc/localtime"
        zone: str | None = None
        problem = None
        if link.is_symlink():
            target = os.readlink(link)
            if "zoneinfo/" in target:
                zone = target.split("zoneinfo/", 1)[1].strip("/")
                if not self._installed(tree, zone):
                    zone, problem = None, f"unparsable: /etc/localtime points to {target}, " \
                                          "which is not installed"
            else:
                problem = f"unparsable: /etc/localtime points to {target}, not to a zone"
        elif link.exists():
            problem = "unparsable: /etc/localtime is a copy, not a link to a zone"
        if zone is None:  # the older file, if it names a zone (localtime broken or absent)
            text = read_text(tree, "/etc/timezone")
            named = (text or "").strip()
            if named and _ZONE.fullmatch(named) and self._installed(tree, named):
                zone = named
            elif problem is None:
                problem = "deleted" if text is None and not os.path.lexists(link) else \
                    "empty" if not named else f"unparsable: /etc/timezone names {named!r}"
        if zone is None:
            raise Invalid(problem or "deleted")
        values = {"zone": zone}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        return values

    @staticmethod
    def _installed(tree: Path, zone: str) -> bool:
        if not (tree / ZONEINFO.lstrip("/")).is_dir():
            return True  # a tree without the zone database: nothing to check against
        p = resolve(tree, f"{ZONEINFO}/{zone}")
        return p is not None and p.is_file()

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        zone = values["zone"]
        if not _ZONE.fullmatch(zone) or ".." in zone.split("/"):
            raise Invalid(f"timezone.zone {zone!r} is not a zone name (e.g. Europe/Berlin)")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        zone = values["zone"]
        if not self._installed(tree, zone):
            raise Invalid(f"zone {zone} is not in this system's {ZONEINFO}")
        written = []
        link = tree / "etc/localtime"
        current = os.readlink(link) if link.is_symlink() else ""
        if current.split("zoneinfo/", 1)[-1] != zone or "zoneinfo/" not in current:
            # the link's style stays: timedatectl writes ../usr/share/zoneinfo/X
            rel = current.startswith("../") or current.startswith("usr/")
            target = f"..{ZONEINFO}/{zone}" if rel else f"{ZONEINFO}/{zone}"
            if write_symlink(tree, "/etc/localtime", target):
                written.append("/etc/localtime")
        if (tree / "etc/timezone").is_file() and \
                write_file(tree, "/etc/timezone", zone + "\n"):  # only where it still is
            written.append("/etc/timezone")
        return written

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/localtime": f"-> {ZONEINFO}/{values['zone']}",
                "/etc/timezone": values["zone"]}


_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


class MachineId(RegistryOperator):
    name = "machine-id"
    paths = ("/etc/machine-id",)
    fields: ClassVar[dict[str, str]] = {"id": "32 lowercase hex digits (systemd's machine ID)"}
    required = ("id",)

    def read(self, tree: Path) -> Values:
        text = read_text(tree, "/etc/machine-id")
        if text is None:
            raise Invalid("deleted")
        value = text.strip()
        if not value:
            raise Invalid("empty")
        values = {"id": value}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        return values

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        v = values["id"]
        if not _MACHINE_ID.fullmatch(v) or v == "0" * 32:
            raise Invalid(f"machine-id.id {v!r} is not 32 lowercase hex digits")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):
            return []
        return ["/etc/machine-id"] if write_file(tree, "/etc/machine-id", values["id"] + "\n",
                                                 new_mode=0o444) else []

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/machine-id": values["id"]}


LOCALE_VARS = ("LANG", "LANGUAGE", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE",
               "LC_MONETARY", "LC_MESSAGES", "LC_PAPER", "LC_NAME", "LC_ADDRESS",
               "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION", "LC_ALL")
_LOCALE_VALUE = re.compile(r"^[A-Za-z0-9_.@:-]+$")


class Locale(RegistryOperator):
    name = "locale"
    paths = ("/etc/default/locale", "/etc/locale.conf")
    optional = paths
    fields: ClassVar[dict[str, str]] = {
        v: ("the system's language and formats (e.g. en_US.UTF-8, C.UTF-8)"
            if v == "LANG" else f"optional: {v} (e.g. de_DE.UTF-8)")
        for v in LOCALE_VARS}

    def read(self, tree: Path) -> Values:
        found = [p for p in self.paths if exists(tree, p)]
        if not found:
            raise Invalid("deleted")
        values: Values = {}
        for p in found:  # the first that holds settings (one may link to the other)
            text = read_text(tree, p)
            if text is None:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, eq, value = line.partition("=")
                value = value.strip().strip("\"'")
                if not eq or key.strip() not in LOCALE_VARS or not _LOCALE_VALUE.fullmatch(value):
                    raise Invalid(f"unparsable: {p} line {n}: {one_line(line, 40)!r}")
                values[key.strip()] = value
            if values:
                return values
        raise Invalid("empty")

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        if not values:
            raise Invalid("locale: no variable set (e.g. locale.LANG=C.UTF-8)")
        for k, v in values.items():
            if not _LOCALE_VALUE.fullmatch(v):
                raise Invalid(f"locale.{k} {v!r}: letters, digits and _ . @ : - only")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):  # update-locale's header and quotes stay
            return []
        text = "".join(f"{k}={values[k]}\n" for k in LOCALE_VARS if k in values)
        written: list[str] = []
        seen: list[str] = []
        for p in self.paths:  # each file the system has (through a link: its target)
            if not exists(tree, p):
                continue
            real = resolve(tree, p)
            if real is None or not str(real).startswith(str(tree)):
                continue
            rel = "/" + os.path.relpath(real, tree)
            if rel in seen:
                continue
            seen.append(rel)
            if write_file(tree, rel, text):
                written.append(rel)
        if not seen:
            p = self.paths[0] if (tree / "etc/default").is_dir() else self.paths[1]
            write_file(tree, p, text)
            written.append(p)
        return written

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        line = " ".join(f"{k}={values[k]}" for k in LOCALE_VARS if k in values)
        return {p: line for p in self.paths}


BUILTIN: dict[str, type[RegistryOperator]] = {
    op.name: op for op in (Hostname, Timezone, MachineId, Locale)}
ENTRY_POINTS = "ibi.state_operators"


_FOUND: tuple[object, dict[str, type[RegistryOperator]]] | None = None


def available() -> dict[str, type[RegistryOperator]]:
    """The built-in registry operators and those installed packages add (entry points of
    the group ``ibi.state_operators``: name = module:Class). Listed once per process:
    listing entry points reads every installed distribution's metadata (tens of ms)."""
    global _FOUND
    from importlib import metadata  # here: importing it costs more than most of ibi

    if _FOUND is None or _FOUND[0] is not metadata.entry_points:
        _FOUND = (metadata.entry_points, _discover(metadata.entry_points))
    return dict(_FOUND[1])


def found() -> object:
    """A token that changes when the set of operators does (for caches of what uses it)."""
    available()
    return _FOUND


def _discover(entry_points: Callable[..., Iterable[Any]]) -> dict[str, type[RegistryOperator]]:
    ops = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in ops:
            continue  # a built-in name is not replaced
        try:
            cls = ep.load()
        except Exception as e:  # a broken plug-in: named, not a traceback
            raise StoreError(f"state operator {ep.name!r} ({ep.value}) cannot be loaded: "
                             f"{e}") from None
        if not (isinstance(cls, type) and issubclass(cls, RegistryOperator)):
            raise StoreError(f"state operator {ep.name!r} ({ep.value}) is not a "
                             "RegistryOperator")
        ops[ep.name] = cls
    return ops
