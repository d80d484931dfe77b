"""What the store's small records hold: the action queued for the next boot (pending),
the settings (policy), the stack on trial and the last automatic fallback, parsed field by
field and rendered.

maintenance/store.py says where each file is (its Store reads and writes them:
maintenance/storeboot.py); this module says what is in them, as maintenance/records.py does
for image metadata, roottab and kernels. A damaged or hostile record raises StoreError (or
ValueError inside a parse), in one line, naming it. See docs/FORMAT.md.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from .errors import BadName, StoreError
from .fields import line_field, opt_str_field, size_field, str_field, utc_stamp, when_field
from .fsio import dump_yaml, load_yaml, one_line, read_store_text
from .model import Fallback, Policy, Trial
from .records import FORMAT_VERSION, LAYER_ID, check_format, check_name

MAX_TRIES = 20

PENDING_ACTIONS = ("restore", "incremental", "full", "rollback", "undo")

R = TypeVar("R")


def read_record(path: Path, parse: Callable[[dict[str, object]], R],
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


def parse_pending(text: str, where: str) -> dict[str, str]:
    """The action queued for the next boot (``where``: the file's name in messages)."""
    try:
        doc = load_yaml(text)
    except ValueError as e:
        raise StoreError(f"{where}: unreadable ({e})") from None
    if not isinstance(doc, dict) or doc.get("action") not in PENDING_ACTIONS:
        raise StoreError(f"{where}: not a known action",
                         hint="see it with: cat; cancel it with: ibi pending --cancel")
    out = {}
    for k, v in doc.items():
        if v is None:
            continue
        if not isinstance(k, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
            raise StoreError(f"{where}: {k!r} is not a plain value",
                             hint="cancel it with: ibi pending --cancel")
        out[k] = str(v)
    if "name" in out:
        try:
            check_name(out["name"])
        except BadName as e:
            raise StoreError(f"{where}: {e}",
                             hint="cancel it with: ibi pending --cancel") from None
    return out


def parse_policy(text: str, where: str) -> Policy:
    """The settings written by hand (every key optional; an empty file: the defaults)."""
    try:
        doc = load_yaml(text)
    except ValueError as e:
        raise StoreError(f"{where}: unreadable ({e})") from None
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
            boot_tries=size_field(doc.get("boot_tries", d.boot_tries), "boot_tries"),
            keep_last=size_field(doc.get("keep_last", d.keep_last), "keep_last"),
            keep_days=size_field(doc.get("keep_days", d.keep_days), "keep_days"),
            max_depth=size_field(doc.get("max_depth", d.max_depth), "max_depth"))
        if p.boot_tries > MAX_TRIES:
            raise ValueError(f"'boot_tries' is more than {MAX_TRIES}")
        if p.max_depth < 2:
            raise ValueError("'max_depth' is less than 2")
        return p
    except (ValueError, TypeError) as e:
        raise StoreError(f"{where}: {one_line(e)}",
                         hint="see docs/FORMAT.md (Updates); fix or remove the file") from None


def trial_from_doc(doc: dict[str, object]) -> Trial:
    tries = size_field(doc.get("tries"), "tries")
    if not 1 <= tries <= MAX_TRIES:
        raise ValueError(f"'tries' is not 1..{MAX_TRIES}")
    layer = opt_str_field(doc, "good_layer")
    if layer is not None and not LAYER_ID.fullmatch(layer):
        raise ValueError("'good_layer' is not a layer id")
    return Trial(_stack(doc, "stack"), _stack(doc, "good"), tries,
                 when_field(doc, "armed"), line_field(str_field(doc, "reason")) or "unknown", layer,
                 line_field(str_field(doc, "failure", "")) if doc.get("failure") else "")


def trial_to_yaml(t: Trial) -> str:
    doc: dict[str, object] = {
        "format": FORMAT_VERSION, "stack": list(t.stack), "good": list(t.good),
        "tries": t.tries, "armed": utc_stamp(t.armed), "reason": t.reason}
    if t.good_layer:
        doc["good_layer"] = t.good_layer
    if t.failure:
        doc["failure"] = t.failure
    return dump_yaml(doc)


def fallback_from_doc(doc: dict[str, object]) -> Fallback:
    return Fallback(_stack(doc, "failed"), _stack(doc, "good"),
                    size_field(doc.get("boots"), "boots"), when_field(doc, "at"),
                    line_field(str_field(doc, "why", "")) if doc.get("why") else "")


def fallback_to_yaml(f: Fallback) -> str:
    doc: dict[str, object] = {
        "format": FORMAT_VERSION, "failed": list(f.failed), "good": list(f.good),
        "boots": f.boots, "at": utc_stamp(f.at)}
    if f.why:
        doc["why"] = f.why
    return dump_yaml(doc)


def _stack(doc: dict[str, object], key: str) -> tuple[str, ...]:
    v = doc.get(key)
    if not isinstance(v, list) or not v or not all(isinstance(n, str) for n in v):
        raise ValueError(f"{key!r} is not a list of image names")
    return tuple(check_name(n) for n in v)

