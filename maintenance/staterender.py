"""Restore System and Roll back's side of the state: the plan (per managed path, the
value now and the value written) and ``apply``, which renders a capture (or the values
the owner chose to keep) into the fresh system."""

from __future__ import annotations

import contextlib
import fnmatch
import os
from collections.abc import Collection, Iterable
from pathlib import Path

from .errors import StoreError, UsageError
from .model import StateItem, StatePlan
from .opbase import RegistryOperator
from .optree import Invalid, Values
from .statecaps import Capture
from .stateconf import Config, _covers
from .statestash import _entry_digest, _make_parents, expand, sync_entry

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
