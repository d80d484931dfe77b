"""The state declarations (``DATA/state/state.yaml``): which operator manages each path
(registry, stash, reference) and how many captures are kept; the default, parsing with
errors that name the line, and the per-process memo of the parsed file."""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import unicodedata
from collections.abc import Mapping

import yaml

from .errors import StoreError
from .fsio import atomic_write
from .operators import RegistryOperator, available
from .operators import found as operators_found
from .store import Store

log = logging.getLogger("maintenance.state")  # state's log, as before the split

FORMAT = 1
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
