"""Captures as they are read: ``DATA/state/captures/<id>/`` loaded and checked (a damaged
one is passed over), newest first, and what the CLI and the menu show of them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import unicodedata
from pathlib import Path

import yaml

from .errors import StoreError
from .model import CaptureInfo, RegistryValue
from .optree import Values
from .stateconf import FORMAT, Config, _covers, _one_line, _yaml_problem
from .store import CAPTURE_META, STASH, Store

log = logging.getLogger("maintenance.state")  # state's log, as before the split

SEQ_DIGITS = 6  # a capture's id starts with a sequence number: a clock that went back
# (a dead RTC, a boot before NTP) cannot reorder the captures


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
