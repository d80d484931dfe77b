"""Captures as they are written: ``capture`` (the managed state of a system that is known
to be good; a value it holds no more keeps the previous capture's) and ``set_values``
(``ibi state set``). A capture is built under ``DATA/state/.tmp-<id>``, fsynced and
renamed into place; the oldest beyond ``keep`` are deleted."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from .errors import StoreError, UsageError
from .fsio import TMP_PREFIX, dump_yaml, durable_rename, fsync_tree, remove_tree
from .opbase import RegistryOperator
from .optree import Invalid, Values
from .statecaps import SEQ_DIGITS, Capture, _load, _seq, captures, latest
from .stateconf import FORMAT, Config
from .statestash import _copy, _entry_digest, _make_parents, expand
from .store import CAPTURE_META, STASH, Store


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
