"""State operators: the owner's configuration, captured while the system is good and
rendered into the fresh writable layer by Restore System and Roll back.

Each managed path has exactly one operator (declared in ``DATA/state/state.yaml``):

- **registry**: typed values parsed from a few files (maintenance/operators.py) and
  rendered back in the layout of the system they are written into;
- **stash**: files and directories kept byte for byte (content, mode, owner, xattrs; the
  links inside a directory as links);
- **reference**: always the image's version (also inside a stashed directory).

A *capture* (``DATA/state/captures/<id>/``: capture.yaml, and stash/ holding the stashed
entries at their paths) is made when the system is known to be good: at install, when a
restore point is made, on ``ibi state save``, and after a boot that reached
multi-user.target (ibi-state-save.service). A value the system holds no more (a file
deleted, empty or unparsable) is never captured: the capture keeps the one before. A
capture is written under ``DATA/state/.tmp-<id>``, fsynced and renamed into place, so a
power cut leaves the old set of captures or the new one; the newest ``keep`` are kept.
Restore never reads the layer it discards, except for the paths the owner chose to keep.
The format is documented in docs/FORMAT.md, "State".
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import filecmp
import fnmatch
import hashlib
import logging
import os
import stat
import unicodedata
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

import yaml

from . import layer as layerfs
from .errors import StoreError, UsageError
from .model import CaptureInfo, RegistryValue, StateItem, StatePlan
from .operators import Invalid, RegistryOperator, Values, available, real_parent
from .operators import found as operators_found
from .store import (
    CAPTURE_META,
    STASH,
    TMP_PREFIX,
    Store,
    atomic_write,
    dump_yaml,
    durable_rename,
    fsync_tree,
    remove_tree,
)

log = logging.getLogger(__name__)

FORMAT = 1
SEQ_DIGITS = 6  # a capture's id starts with a sequence number: a clock that went back
# (a dead RTC, a boot before NTP) cannot reorder the captures
DEFAULT_KEEP = 5
KINDS = ("registry", "stash", "reference")
GLOB_CHARS = set("*?[")
NOT_SYSTEM = ("/home", "/proc", "/sys", "/dev", "/run", "/tmp")

DEFAULT_CONFIG = """\
# ibi state: the configuration kept across Restore System and Roll back (docs/FORMAT.md).
# Each path has one operator. Values are captured while the system is good (at install,
# when a restore point is made, after each boot that reaches multi-user.target, and on
# `ibi state save`) and written into the fresh writable layer by Restore and Roll back.
format: 1
keep: 5             # captures kept (the newest)

# Parsed into values (ibi state get/set) and rendered back into the files:
registry:
  - hostname        # /etc/hostname, and the 127.0.1.1 line of /etc/hosts
  - timezone        # /etc/localtime, /etc/timezone
  - machine-id      # /etc/machine-id
  - locale          # /etc/default/locale or /etc/locale.conf

# Kept byte for byte (files or directories; *, ? and [...] in the last part):
stash:
  - /etc/adjtime
  - /etc/ssh/ssh_host_*
  - /etc/NetworkManager/system-connections
  - /etc/wireguard

# Always the image's version: local changes are discarded, also inside a stash path:
reference: []
"""


# ---------------------------------------------------------------------- declarations

@dataclasses.dataclass(frozen=True)
class Config:
    registry: tuple[RegistryOperator, ...]
    stash: tuple[str, ...]
    reference: tuple[str, ...]
    keep: int = DEFAULT_KEEP

    def operator(self, name: str) -> RegistryOperator | None:
        return next((op for op in self.registry if op.name == name), None)

    def is_reference(self, path: str) -> bool:
        return any(_covers(r, path) for r in self.reference)


def _covers(pattern: str, path: str) -> bool:
    """Whether ``path`` is ``pattern``'s path (matched by its glob) or lies below it."""
    if not path.startswith("/") or any(x in (".", "..") for x in path.split("/")):
        return False
    pp, qq = pattern.split("/")[1:], path.split("/")[1:]
    return len(qq) >= len(pp) and all(fnmatch.fnmatchcase(q, p)
                                      for p, q in zip(pp, qq, strict=False))


def _overlap(a: str, b: str) -> bool:
    pa, pb = a.split("/")[1:], b.split("/")[1:]
    return all(fnmatch.fnmatchcase(x, y) or fnmatch.fnmatchcase(y, x)
               for x, y in zip(pa, pb, strict=False))


def _one_line(text: str) -> str:
    """``text`` on one line, control characters escaped (for a message)."""
    text = " ".join(text.split())
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cs") else c
                   for c in text)


def _yaml_problem(e: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    """(line, what is wrong) of a YAML error, on one line."""
    if isinstance(e, yaml.reader.ReaderError):  # a character YAML does not allow
        ch = e.character
        code = ch if isinstance(ch, int) else ord(ch)
        return text.count("\n", 0, e.position) + 1, f"character #x{code:04x} is not allowed"
    mark = getattr(e, "problem_mark", None)
    return (mark.line + 1 if mark is not None else None,
            _one_line(str(getattr(e, "problem", None) or e)))


def _check_path(p: object, where: str) -> str:
    if not isinstance(p, str):
        raise StoreError(f"{where}: {p!r} is not a path")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in p):
        raise StoreError(f"{where}: {p!r}: control characters in a path")
    parts = p.split("/")
    if "\0" in p or not p.startswith("/") or any(x in ("..", ".") for x in parts) \
            or p != "/" + "/".join(x for x in parts if x) or p == "/":
        raise StoreError(f"{where}: {p!r} is not a path under / (absolute, without . or ..)")
    if any(GLOB_CHARS & set(x) for x in parts[:-1]):
        raise StoreError(f"{where}: {p!r}: wildcards only in the last part of a path")
    for top in NOT_SYSTEM:
        if p == top or p.startswith(top + "/"):
            raise StoreError(f"{where}: {p!r} is not part of the system's files ({top} is "
                             "never in the images or the writable layer)")
    return p


def parse_config(text: str, where: str = "state.yaml",
                 ops: Mapping[str, type[RegistryOperator]] | None = None) -> Config:
    """The declarations; :class:`StoreError` naming the line for anything wrong."""
    ops = available() if ops is None else ops
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        n, problem = _yaml_problem(e, text)
        line = f" line {n}" if n is not None else ""
        raise StoreError(f"{where}{line}: not valid YAML ({problem})") from None
    except RecursionError:
        raise StoreError(f"{where}: not valid YAML (nested too deeply)") from None
    if root is None:
        return Config((), (), ())
    if not isinstance(root, yaml.MappingNode):
        raise StoreError(f"{where} line {root.start_mark.line + 1}: expected "
                         "'registry:', 'stash:' and 'reference:' lists")
    lists: dict[str, list[tuple[str, int]]] = {k: [] for k in KINDS}
    keep = DEFAULT_KEEP
    for knode, vnode in root.value:  # the format first: a newer file is refused as such
        if isinstance(knode, yaml.ScalarNode) and knode.value == "format" and (
                not isinstance(vnode, yaml.ScalarNode) or vnode.value != str(FORMAT)):
            shown = _one_line(vnode.value) if isinstance(vnode, yaml.ScalarNode) else \
                "(not a number)"
            raise StoreError(f"{where} line {knode.start_mark.line + 1}: format {shown} is "
                             f"not known (this ibi reads format {FORMAT})")
    for knode, vnode in root.value:
        line = knode.start_mark.line + 1
        at = f"{where} line {line}"
        if not isinstance(knode, yaml.ScalarNode):
            raise StoreError(f"{at}: expected a name before ':' (registry, stash, reference, "
                             "format or keep)")
        key = knode.value
        if key == "format":
            pass  # checked above
        elif key == "keep":
            try:
                keep = int(vnode.value) if isinstance(vnode, yaml.ScalarNode) else 0
            except (TypeError, ValueError):
                keep = 0
            if not 1 <= keep <= 100:
                raise StoreError(f"{at}: keep must be a number of captures from 1 to 100")
        elif key in KINDS:
            if isinstance(vnode, yaml.ScalarNode) and vnode.value in ("", "null", "~"):
                continue
            if not isinstance(vnode, yaml.SequenceNode):
                raise StoreError(f"{at}: {key} must be a list (one '- item' per line)")
            for item in vnode.value:
                iline = item.start_mark.line + 1
                if not isinstance(item, yaml.ScalarNode):
                    raise StoreError(f"{where} line {iline}: one name or path per item")
                lists[key].append((item.value, iline))
        else:
            raise StoreError(f"{at}: unknown operator {key!r} (the operators are registry, "
                             "stash and reference; also: format, keep)")
    registry: list[RegistryOperator] = []
    claims: list[tuple[str, str, int]] = []  # (path, operator, line)
    for name, nline in lists["registry"]:
        if name not in ops:
            raise StoreError(f"{where} line {nline}: unknown registry operator {name!r} "
                             f"(known: {', '.join(sorted(ops))})")
        if any(op.name == name for op in registry):
            raise StoreError(f"{where} line {nline}: {name} is listed twice")
        op = ops[name]()
        registry.append(op)
        claims += [(p, f"registry {name}", nline) for p in op.paths]
    for kind in ("stash", "reference"):
        for p, pline in lists[kind]:
            claims.append((_check_path(p, f"{where} line {pline}"), kind, pline))
    for i, (p, who, cline) in enumerate(claims):
        for q, other, oline in claims[:i]:
            if not _overlap(p, q):
                continue
            if who == "reference" and other == "stash" and _covers(q, p) and p != q:
                continue  # a reference path inside a stash directory: carved out of it
            if other == "reference" and who == "stash" and _covers(p, q) and p != q:
                continue
            if who == other and who.startswith("registry"):
                continue
            raise StoreError(f"{where} line {cline}: {p} ({who}) overlaps {q} ({other}, line "
                             f"{oline}): each path has one operator")
    return Config(tuple(registry), tuple(p for p, _ in lists["stash"]),
                  tuple(p for p, _ in lists["reference"]), keep)


def default_text(store: Store) -> str:
    """The default declarations, with the paths of an older store's ``preserve`` list that
    no default operator manages added as stash paths."""
    text = DEFAULT_CONFIG
    try:
        legacy = store.read_preserve()
    except (StoreError, OSError, ValueError) as e:  # not text, unreadable: not imported
        log.warning("%s: not imported", e)
        legacy = []
    cfg = parse_config(text)
    managed = [p for op in cfg.registry for p in op.paths] + list(cfg.stash)
    extra: list[str] = []
    for p in legacy:  # what the older list allowed and this one refuses is left out
        try:
            _check_path(p, "preserve")
        except StoreError as e:
            log.warning("%s: not imported", e)
            continue
        if not any(_overlap(p, m) for m in [*managed, *extra]):
            extra.append(p)
    if extra:
        text = text.replace("  - /etc/wireguard\n", "  - /etc/wireguard\n" + "".join(
            f"  - {p}    # from .root_images/preserve\n" for p in extra))
    return text


_PARSED: dict[str, tuple[tuple[int, ...], object, Config]] = {}


def load_config(store: Store) -> Config:
    """The state declarations (state.yaml, or the defaults). Parsed once per version of
    the file in a process (an action reads them several times)."""
    try:
        st = os.stat(store.state_conf)
        key: tuple[int, ...] | None = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns,
                                       st.st_ctime_ns)
    except OSError:
        key = None
    seen = _PARSED.get(str(store.state_conf))
    if key is not None and seen is not None and seen[0] == key and \
            seen[1] is operators_found():
        return seen[2]
    cfg = _load_config(store)
    if key is not None:
        _PARSED[str(store.state_conf)] = (key, operators_found(), cfg)
    return cfg


def _load_config(store: Store) -> Config:
    try:
        text = store.state_conf.read_bytes().decode("utf-8")
    except FileNotFoundError:
        text = default_text(store)
    except UnicodeDecodeError as e:
        raise StoreError(f"{store.state_conf}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise StoreError(f"{store.state_conf}: unreadable ({e.strerror})") from None
    return parse_config(text, str(store.state_conf))


def ensure_config(store: Store) -> None:
    """Write the default declarations when there are none (so the owner can edit them)."""
    if not store.state_conf.exists():
        store.state.mkdir(exist_ok=True)
        atomic_write(store.state_conf, default_text(store))


# ---------------------------------------------------------------------- stashed entries

def expand(tree: Path, pattern: str) -> list[str]:
    """The paths of the tree ``pattern`` matches (sorted). A path on the way that is a
    symlink, or a match that is one, is refused: a stash keeps the system's own files."""
    parent, _, last = pattern.rpartition("/")
    try:
        real_parent(tree, pattern)
    except FileNotFoundError:
        return []
    except Invalid as e:
        raise StoreError(f"stash {pattern}: {e}") from None
    if GLOB_CHARS & set(last):
        try:
            names = sorted(n for n in os.listdir(tree / parent.lstrip("/"))
                           if fnmatch.fnmatchcase(n, last))
        except (FileNotFoundError, NotADirectoryError):
            return []
    else:
        names = [last] if os.path.lexists(tree / pattern.lstrip("/")) else []
    out = []
    for n in names:
        p = f"{parent}/{n}"
        full = tree / p.lstrip("/")
        if full.is_symlink():
            target = os.readlink(full)
            out_of = _climbs_out(parent, target)
            raise StoreError(f"stash {p}: a symlink (-> {target})"
                             + (" out of the tree" if out_of else "")
                             + "; a stash keeps files and directories: declare the path "
                             "it leads to")
        out.append(p)
    return out


def _climbs_out(parent: str, target: str) -> bool:
    depth = len([x for x in parent.split("/") if x])
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part and part != ".":
            depth += 1
    return False


def _entry_digest(root: Path, path: str, skip: Callable[[str], bool]) -> tuple[str, str]:
    """(a one-line description, a sha256 over content, type, mode, owner and xattrs) of
    the entry at ``path`` in ``root`` and everything below it (minus ``skip``)."""
    h = hashlib.sha256()
    files = dirs = size = 0
    top = root / path.lstrip("/")
    todo = [(top, path)]
    while todo:
        full, p = todo.pop()
        if skip(p):
            continue
        st = os.lstat(full)
        h.update(f"{p}\0{stat.S_IFMT(st.st_mode)}\0{stat.S_IMODE(st.st_mode)}\0"
                 f"{st.st_uid}\0{st.st_gid}\0".encode())
        with contextlib.suppress(OSError):
            for x in sorted(os.listxattr(full, follow_symlinks=False)):
                h.update(x.encode() + b"\0" + os.getxattr(full, x, follow_symlinks=False))
        if stat.S_ISDIR(st.st_mode):
            dirs += 1
            todo += [(full / n, f"{p}/{n}") for n in sorted(os.listdir(full), reverse=True)]
        elif stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(full).encode())
        elif stat.S_ISREG(st.st_mode):
            files += 1
            size += st.st_size
            with open(full, "rb") as f:
                while chunk := f.read(1 << 16):
                    h.update(chunk)
        else:
            h.update(str(st.st_rdev).encode())
    digest = h.hexdigest()
    if stat.S_ISDIR(os.lstat(top).st_mode):
        what = f"directory, {files} file{'s' if files != 1 else ''}"
    else:
        what = f"file, {size} bytes"
    return f"{what}, sha256 {digest[:12]}", digest


def _copy(src: Path, dst: Path, path: str, skip: Callable[[str], bool]) -> None:
    """Copy the entry ``src`` (at ``path``) to ``dst``, as layer.copy_entry, minus ``skip``."""
    st = os.lstat(src)
    if stat.S_ISDIR(st.st_mode):
        os.mkdir(dst)
        for n in sorted(os.listdir(src)):
            if not skip(f"{path}/{n}"):
                _copy(src / n, dst / n, f"{path}/{n}", skip)
        layerfs.copy_meta(str(src), str(dst), st)
    else:
        layerfs.copy_entry(str(src), str(dst))


def _make_parents(src_root: Path, dst_root: Path, path: str) -> None:
    """Create the directories above ``path`` in ``dst_root`` that are missing, with the
    owner and mode they have in ``src_root``; refuse a symlink on the way."""
    parts = path.strip("/").split("/")[:-1]
    for i in range(1, len(parts) + 1):
        d = dst_root.joinpath(*parts[:i])
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            os.mkdir(d, 0o700)
            s = src_root.joinpath(*parts[:i])
            if s.is_dir() and not s.is_symlink():
                layerfs.copy_meta(str(s), str(d), os.lstat(s), xattrs=False)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise Invalid(f"/{'/'.join(parts[:i])} is not a directory in this system")


def _same(src: Path, s: os.stat_result, dst: Path, d: os.stat_result) -> bool:
    if stat.S_IFMT(s.st_mode) != stat.S_IFMT(d.st_mode) or (s.st_uid, s.st_gid) != (
            d.st_uid, d.st_gid):
        return False
    if stat.S_ISLNK(s.st_mode):
        return os.readlink(src) == os.readlink(dst)
    if stat.S_ISREG(s.st_mode):
        return stat.S_IMODE(s.st_mode) == stat.S_IMODE(d.st_mode) and \
            filecmp.cmp(src, dst, shallow=False)
    return False


def sync_entry(src: Path, dst: Path, path: str, skip: Callable[[str], bool]) -> bool:
    """Make ``dst`` (at ``path`` of the fresh system) what ``src`` is, touching only what
    differs: an identical file stays the image's (no copy in the layer); what a stashed
    directory lacks is removed; ``skip`` (reference paths) is left alone. Returns whether
    anything changed."""
    if skip(path):
        return False
    s = os.lstat(src)
    try:
        d: os.stat_result | None = os.lstat(dst)
    except FileNotFoundError:
        d = None
    if d is not None and stat.S_ISDIR(s.st_mode) and stat.S_ISDIR(d.st_mode):
        names = set(os.listdir(src))
        changed = False
        for n in sorted(os.listdir(dst)):
            if n not in names and not skip(f"{path}/{n}"):
                remove_tree(dst / n)
                changed = True
        for n in sorted(names):
            changed = sync_entry(src / n, dst / n, f"{path}/{n}", skip) or changed
        if (stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid) != (
                stat.S_IMODE(d.st_mode), d.st_uid, d.st_gid):
            layerfs.copy_meta(str(src), str(dst), s)
            changed = True
        return changed
    if d is not None:
        if _same(src, s, dst, d):
            return False
        remove_tree(dst)
    _copy(src, dst, path, skip)
    return True


# ---------------------------------------------------------------------- captures

@dataclasses.dataclass(frozen=True)
class Capture:
    id: str
    created: dt.datetime
    reason: str
    stack: tuple[str, ...]
    registry: dict[str, Values]  # operator -> values
    stash: dict[str, dict[str, dict[str, str]]]  # pattern -> path -> {what, digest}
    notes: tuple[str, ...]
    dir: Path
    pinned: dict[str, Values] = dataclasses.field(default_factory=dict)  # operator -> the
    # system's value when `ibi state set` changed it: while the system still has that
    # value, a capture keeps the value set (the owner's choice outlives the next boot)

    @property
    def stash_root(self) -> Path:
        return self.dir / STASH

    def stashed(self) -> dict[str, dict[str, str]]:
        return {p: e for entries in self.stash.values() for p, e in entries.items()}


def _text(v: object, what: str) -> str:
    """A capture's value as text: a string (or a number YAML read as one)."""
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError(f"{what} is not text")
    s = str(v)
    if any(unicodedata.category(c) == "Cs" for c in s):
        raise ValueError(f"{what} is not UTF-8 text")
    return s


def _values(doc: object, what: str) -> dict[str, Values]:
    if not isinstance(doc, dict):
        raise ValueError(f"{what} is not a mapping")
    out: dict[str, Values] = {}
    for k, vals in doc.items():
        vals = {} if vals is None else vals
        if not isinstance(vals, dict):
            raise ValueError(f"{what} {_text(k, 'a name')} is not a mapping")
        out[_text(k, what)] = {_text(f, what): _text(v, f"{what} {f}")
                               for f, v in vals.items() if v is not None}
    return out


def _load(d: Path) -> Capture:
    where = f"capture {d.name}"
    try:
        text = (d / CAPTURE_META).read_bytes().decode("utf-8")
        doc = yaml.safe_load(text)
    except OSError as e:
        raise StoreError(f"{where}: unreadable ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise StoreError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        n, problem = _yaml_problem(e, text)
        raise StoreError(f"{where}: not valid YAML ({'line ' + str(n) + ': ' if n else ''}"
                         f"{problem})") from None
    except (ValueError, KeyError, IndexError, AttributeError, TypeError, OverflowError,
            RecursionError) as e:  # a number too long, a nesting too deep, a bad explicit
        # tag (yaml.safe_load("!!int ''") raises IndexError, "!!timestamp x" AttributeError)
        raise StoreError(f"{where}: unreadable ({type(e).__name__}: "
                         f"{_one_line(str(e))[:100]})") from None
    try:
        if not isinstance(doc, dict):
            raise ValueError("not a capture")
        fmt = doc.get("format")
        if fmt != FORMAT or isinstance(fmt, bool):
            raise ValueError(f"format {_one_line(str(fmt))[:40]} is not known (this ibi "
                             f"reads format {FORMAT})")
        created = doc["created"]
        if isinstance(created, dt.date) and not isinstance(created, dt.datetime):
            created = dt.datetime.combine(created, dt.time())
        if not isinstance(created, dt.datetime):
            created = dt.datetime.fromisoformat(_text(created, "created").replace("Z",
                                                                                  "+00:00"))
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        registry = _values(doc.get("registry") or {}, "registry")
        pinned = _values(doc.get("pinned") or {}, "pinned")
        stash: dict[str, dict[str, dict[str, str]]] = {}
        for pat, entries in (doc.get("stash") or {}).items():
            stash[_text(pat, "a stash path")] = {
                _text(p, "a stash path"): {"what": _text(e["what"], "what"),
                                           "digest": _text(e["digest"], "digest")}
                for p, e in (entries or {}).items()}
        cap = Capture(d.name, created, _text(doc.get("reason", ""), "reason"),
                      tuple(_text(n, "stack") for n in doc.get("stack") or ()), registry,
                      stash, tuple(_text(n, "notes") for n in doc.get("notes") or ()), d,
                      pinned)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise StoreError(f"{where}: damaged ({_one_line(str(e))[:120]})") from None
    for pat, entries in cap.stash.items():
        for p in entries:
            if not _covers(pat, p) or p.count("/") != pat.count("/") or "\0" in p:
                raise StoreError(f"{where}: damaged (stash path {p!r} under {pat!r})")
            if not os.path.lexists(cap.stash_root / p.lstrip("/")):
                raise StoreError(f"{where}: the stashed {_one_line(p)} is missing")
    return cap


def captures(store: Store) -> list[Capture]:
    """The readable captures, newest first (a damaged one is logged and passed over)."""
    out = []
    try:
        dirs = sorted((p for p in store.captures.iterdir()
                       if not p.name.startswith(".")), reverse=True)
    except FileNotFoundError:
        return []
    for d in dirs:
        try:
            out.append(_load(d))
        except StoreError as e:
            log.warning("%s (passed over)", e)
    return out


def _seq(name: str) -> int:
    head = name.split("-", 1)[0]
    return int(head) if len(head) == SEQ_DIGITS and head.isdigit() else 0


def latest(store: Store) -> Capture | None:
    caps = captures(store)
    return caps[0] if caps else None


def _summary(op: RegistryOperator, values: Values) -> str:
    return op.show(values)[op.paths[0]]


def capture(store: Store, cfg: Config, tree: Path, reason: str,
            stack: Iterable[str]) -> tuple[Capture | None, list[str]]:
    """Capture the managed state of the system in ``tree``. Returns the new capture (None
    when nothing changed since the last one: no new version is written) and the
    problems met (a stash path refused): the rest is captured all the same."""
    prev = latest(store)
    registry: dict[str, Values] = {}
    pinned: dict[str, Values] = {}
    notes: list[str] = []
    for op in cfg.registry:
        old = prev.registry.get(op.name) if prev else None
        try:
            now = op.read(tree)
        except Invalid as e:
            if old:
                registry[op.name] = dict(old)
                notes.append(f"{op.paths[0]} {e}: kept {_summary(op, old)} from capture "
                             f"{prev.id}")  # type: ignore[union-attr]
                if prev and op.name in prev.pinned:
                    pinned[op.name] = prev.pinned[op.name]
            else:
                notes.append(f"{op.paths[0]} {e}: not captured")
            continue
        if prev and op.name in prev.pinned and now == prev.pinned[op.name] and old:
            registry[op.name] = dict(old)  # set by the owner; the system is as it was then
            pinned[op.name] = prev.pinned[op.name]
        else:
            registry[op.name] = now
    problems: list[str] = []

    def fill(root: Path) -> dict[str, dict[str, dict[str, str]]]:
        stash: dict[str, dict[str, dict[str, str]]] = {}
        for pat in cfg.stash:
            try:
                matches = expand(tree, pat)
            except StoreError as e:
                problems.append(str(e))
                matches = []
                if prev and prev.stash.get(pat):
                    stash[pat] = _carry_stash(prev, pat, root, cfg)
                    notes.append(f"{pat}: refused now; kept from capture {prev.id}")
                continue
            if matches:
                stash[pat] = {}
                for p in matches:
                    _make_parents(tree, root, p)
                    _copy(tree / p.lstrip("/"), root / p.lstrip("/"), p, cfg.is_reference)
                    what, digest = _entry_digest(root, p, cfg.is_reference)
                    stash[pat][p] = {"what": what, "digest": digest}
            elif prev and prev.stash.get(pat):
                stash[pat] = _carry_stash(prev, pat, root, cfg)
                notes.append(f"{pat} deleted: kept from capture {prev.id}")
        return stash

    cap = _write(store, cfg, reason, tuple(stack), registry, notes, fill, prev,
                 pinned=pinned)
    return cap, problems


def _carry_stash(prev: Capture, pattern: str, root: Path,
                 cfg: Config) -> dict[str, dict[str, str]]:
    for p in prev.stash[pattern]:
        _make_parents(prev.stash_root, root, p)
        _copy(prev.stash_root / p.lstrip("/"), root / p.lstrip("/"), p, cfg.is_reference)
    return dict(prev.stash[pattern])


def _write(store: Store, cfg: Config, reason: str, stack: tuple[str, ...],
           registry: dict[str, Values], notes: list[str],
           fill: Callable[[Path], dict[str, dict[str, dict[str, str]]]],
           prev: Capture | None, force: bool = False,
           pinned: dict[str, Values] | None = None) -> Capture | None:
    now = dt.datetime.now(dt.UTC)
    seq = 1 + max((_seq(p.name) for p in store.captures.glob("*")), default=0) \
        if store.captures.is_dir() else 1
    cid = f"{seq:0{SEQ_DIGITS}d}-{now:%Y%m%d-%H%M%S}-{reason}"
    store.state.mkdir(exist_ok=True)
    store.captures.mkdir(exist_ok=True)
    tmp = store.state / f"{TMP_PREFIX}{cid}"
    try:
        os.mkdir(tmp, 0o700)  # stashed keys are secrets
        (tmp / STASH).mkdir(mode=0o700)
        stash = fill(tmp / STASH)
        pinned = pinned or {}
        if prev is not None and not force and prev.registry == registry and \
                prev.pinned == pinned and \
                {p: {q: e["digest"] for q, e in v.items()} for p, v in prev.stash.items()} \
                == {p: {q: e["digest"] for q, e in v.items()} for p, v in stash.items()}:
            remove_tree(tmp)
            return None
        doc = {"format": FORMAT, "created": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
               "reason": reason, "stack": list(stack), "registry": registry,
               "stash": stash, "notes": notes}
        if pinned:
            doc["pinned"] = pinned
        (tmp / CAPTURE_META).write_text(dump_yaml(doc), encoding="utf-8")
        fsync_tree(tmp)
        durable_rename(tmp, store.captures / cid)
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(tmp)
        raise
    _prune(store, cfg.keep)
    return _load(store.captures / cid)


def _prune(store: Store, keep: int) -> None:
    """Delete the captures older than the newest ``keep`` readable ones (each renamed to
    a .tmp- name first, so that a half-deleted one is never read)."""
    caps = captures(store)
    for old in caps[keep:]:
        gone = store.state / f"{TMP_PREFIX}old-{old.id}"
        with contextlib.suppress(OSError):
            durable_rename(old.dir, gone)
            remove_tree(gone)


def set_values(store: Store, cfg: Config, changes: Mapping[str, str | None],
               stack: Iterable[str]) -> Capture:
    """A new capture: the last one with ``changes`` (``"operator.field"`` -> value, None to
    remove) applied. :class:`UsageError` naming the key for anything malformed."""
    prev = latest(store)
    before = {k: dict(v) for k, v in (prev.registry if prev else {}).items()}
    registry = {k: dict(v) for k, v in before.items()}
    pinned = dict(prev.pinned) if prev else {}
    for key, value in changes.items():
        name, _, field = key.partition(".")
        op = cfg.operator(name)
        if op is None or field not in op.fields:
            raise UsageError(f"unknown key {key!r} (ibi state list shows the keys)")
        vals = registry.setdefault(name, {})
        if value is None or value == "":
            vals.pop(field, None)
        else:
            vals[field] = value
    host = registry.get("hostname", {})
    old_fqdn = before.get("hostname", {}).get("fqdn")
    if "hostname.fqdn" not in changes and old_fqdn and host.get("name") and \
            host.get("fqdn") == old_fqdn and not old_fqdn.startswith(host["name"] + "."):
        host["fqdn"] = f"{host['name']}.{old_fqdn.split('.', 1)[1]}"  # the domain stays
    for name, vals in registry.items():  # pinned: the system's value when it was set
        if vals != before.get(name) and name not in pinned:
            pinned[name] = before.get(name, {})
        if pinned.get(name) == vals:
            del pinned[name]  # set back to what the system has
    for name, vals in list(registry.items()):
        op = cfg.operator(name)
        if not vals:
            del registry[name]
        elif op is not None:
            try:
                op.check(vals)
            except Invalid as e:
                raise UsageError(str(e)) from None

    def fill(root: Path) -> dict[str, dict[str, dict[str, str]]]:
        if prev is None:
            return {}
        for pat in prev.stash:
            _carry_stash(prev, pat, root, cfg)
        return dict(prev.stash)

    cap = _write(store, cfg, "set", tuple(stack) or (prev.stack if prev else ()), registry,
                 [], fill, prev, force=True, pinned=pinned)
    assert cap is not None
    return cap


def info(cap: Capture, cfg: Config) -> CaptureInfo:
    return CaptureInfo(cap.id, cap.created, cap.reason, cap.stack, values(cfg, cap),
                       tuple(cap.stashed()), cap.notes)


def values(cfg: Config, cap: Capture | None) -> tuple[RegistryValue, ...]:
    """Each operator's fields: the required and the first one always, others when set."""
    out = []
    for op in cfg.registry:
        vals = cap.registry.get(op.name, {}) if cap else {}
        for i, (f, help_) in enumerate(op.fields.items()):
            if i == 0 or f in op.required or f in vals:
                out.append(RegistryValue(f"{op.name}.{f}", vals.get(f), op.name, op.paths,
                                         help_))
    return tuple(out)


# ---------------------------------------------------------------------- Restore's plan

def _now_registry(op: RegistryOperator, tree: Path | None
                  ) -> tuple[Values | None, dict[str, str]]:
    if tree is None:
        return None, {p: "(unknown: the system cannot be read)" for p in op.paths}
    try:
        vals = op.read(tree)
        return vals, {p: op.look(tree, p) for p in op.paths}  # the files, as they are
    except Invalid as e:
        shown = {p: op.look(tree, p) for p in op.paths}
        msg = str(e)
        shown[op.paths[0]] = f"({msg})" if msg in ("deleted", "empty") else msg
        return None, shown


def plan(cfg: Config, cap: Capture | None, now: Path | None, upper: Path | None,
         keep: Collection[str] = ()) -> StatePlan:
    """Per managed path: the value now (``now``: the system as it is, None if it cannot
    be read) and what Restore or Roll back writes (from ``cap``, or kept)."""
    items: list[StateItem] = []
    source = f"capture {cap.id}" if cap else "the image"
    for op in cfg.registry:
        now_vals, now_shown = _now_registry(op, now)
        cap_vals = cap.registry.get(op.name) if cap else None
        can_keep = now_vals is not None and now_vals != cap_vals
        paths = [p for p in op.paths if p not in op.optional or now is None
                 or os.path.lexists(now / p.lstrip("/"))] or [op.paths[0]]
        if op.name in keep and can_keep:
            w_shown, src = now_shown, "kept"
        elif cap_vals:
            w_shown, src = op.show(cap_vals), source
        else:  # nothing captured: the image's file, which differs only where the layer
            # changed it (a file neither the image nor the system has is no news)
            w_shown, src = {p: "(the image's file)" for p in op.paths}, "the image"
            for p in paths:
                in_layer = upper is not None and os.path.lexists(upper / p.lstrip("/"))
                items.append(StateItem(p, op.name, op.name, now_shown[p],
                                       now_vals is not None or not in_layer, w_shown[p], src,
                                       in_layer, can_keep))
            continue
        changed = now_vals != (now_vals if src == "kept" else cap_vals)
        for p in paths:  # the values decide what changes (the lines show the files);
            # with no valid value now, each file is compared with what it gets
            items.append(StateItem(p, op.name, op.name, now_shown[p], now_vals is not None,
                                   w_shown[p], src, changed if now_vals is not None
                                   else now_shown[p] != w_shown[p], can_keep))
    stashed = cap.stashed() if cap else {}
    for pat in cfg.stash:
        cpaths = {p for p in stashed if _covers(pat, p) and p.count("/") == pat.count("/")}
        now_paths: list[str] = []
        if now is not None:
            with contextlib.suppress(StoreError):
                now_paths = expand(now, pat)
        for p in sorted(cpaths | set(now_paths)):
            if p in now_paths:
                what_now, dig_now = _entry_digest(now, p, cfg.is_reference)  # type: ignore[arg-type]
            else:
                what_now, dig_now = "(deleted)", ""
            cap_e = stashed.get(p)
            can_keep = bool(dig_now) and (cap_e is None or cap_e["digest"] != dig_now)
            if p in keep and can_keep:
                written, src = what_now, "kept"
            elif cap_e:
                written, src = cap_e["what"], source
            else:
                written, src = "(the image's)", "the image"
            items.append(StateItem(p, "stash", p, what_now, bool(dig_now), written, src,
                                   what_now != written, can_keep))
    for ref in cfg.reference:
        changed = upper is not None and any(
            True for _ in _layer_matches(upper, ref))
        items.append(StateItem(ref, "reference", "", "changed in the writable layer"
                               if changed else "the image's", True, "the image's",
                               "the image", changed, False))
    return StatePlan(cap.id if cap else None, cap.created if cap else None, tuple(items))


def _layer_matches(upper: Path, pattern: str) -> Iterable[str]:
    parent, _, last = pattern.rpartition("/")
    with contextlib.suppress(OSError):
        for n in os.listdir(upper / parent.lstrip("/")):
            if fnmatch.fnmatchcase(n, last):
                yield f"{parent}/{n}"


def check_choices(cfg: Config, keep: Collection[str]) -> None:
    for k in keep:
        if cfg.operator(k) is None and not any(_covers(pat, k) and k.count("/") ==
                                               pat.count("/") for pat in cfg.stash):
            raise UsageError(f"--keep-current {k!r}: not a registry operator or a stash path "
                             "(ibi restore --dry-run lists them)")


# ---------------------------------------------------------------------- applying

def apply(cfg: Config, cap: Capture | None, fresh: Path, now: Path | None,
          keep: Collection[str] = ()) -> tuple[list[str], list[str], list[str]]:
    """Write the managed state into ``fresh`` (the new system: an overlay of its stack
    with the fresh layer as upper): each registry operator's values and each stashed
    entry from ``cap``, or, for the choices in ``keep``, from ``now`` (the system as it
    was) when its value there is valid. Returns the paths changed from the image's, the
    paths kept as they were, and warnings."""
    written: list[str] = []
    kept: list[str] = []
    warnings: list[str] = []
    for op in cfg.registry:
        vals: Values | None = None
        if op.name in keep and now is not None:
            with contextlib.suppress(Invalid):
                vals = op.read(now)
            if vals is None:
                warnings.append(f"{op.name}: the current value is not valid; the captured "
                                "one is written")
        from_now = vals is not None
        if vals is None:
            vals = cap.registry.get(op.name) if cap else None
        if not vals:
            continue
        try:
            paths = op.write(fresh, vals)
        except (Invalid, OSError) as e:
            warnings.append(f"{op.name}: not written: {e}")
            continue
        if from_now:
            kept.extend(p for p in op.paths if p in paths or os.path.lexists(
                fresh / p.lstrip("/")))
        else:
            written.extend(paths)
    stashed = cap.stashed() if cap else {}
    for pat in cfg.stash:
        todo: dict[str, Path] = {p: cap.stash_root for p in stashed  # type: ignore[union-attr]
                                 if _covers(pat, p) and p.count("/") == pat.count("/")}
        if now is not None and any(_covers(pat, k) for k in keep):
            try:
                for p in expand(now, pat):
                    if p in keep:
                        todo[p] = now
            except StoreError as e:
                warnings.append(str(e))
        for p, root in sorted(todo.items()):
            try:
                _make_parents(root, fresh, p)
                changed = sync_entry(root / p.lstrip("/"), fresh / p.lstrip("/"), p,
                                     cfg.is_reference)
            except (Invalid, OSError) as e:
                warnings.append(f"{p}: not written: {e}")
                continue
            if root is now:
                kept.append(p)
            elif changed:
                written.append(p)
    return written, kept, warnings
