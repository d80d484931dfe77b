"""What the store's documents hold: image metadata, roottab, and the small records
(pending, policy, trial, fallback, the layer's kernels), parsed field by field and rendered.

maintenance/store.py says where each file is and reads and writes it; this module says what
is in it. A damaged or hostile document raises StoreError (or ValueError inside a parse),
in one line, naming it. See docs/FORMAT.md.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import yaml

from .errors import BadName, StoreError
from .fsio import dump_yaml, load_yaml, one_line, read_store_text
from .model import Fallback, ImageMeta, KernelRef, Kind, Policy, Trial

IMAGE_EXT = ".sqfs"  # an image NAME is the file NAME.sqfs ...
META_EXT = ".yaml"  # ... with its metadata NAME.yaml
FORMAT_VERSION = 1
MAX_TRIES = 20

PENDING_ACTIONS = ("restore", "incremental", "full", "rollback", "undo")

LAYER_ID = re.compile(r"^[0-9a-f]{1,64}$")
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


# --- roottab, preserve, image metadata --------------------------------------------

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


# --- the small records -----------------------------------------------------------

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
        raise StoreError(f"{where}: {one_line(e)}",
                         hint="see docs/FORMAT.md (Updates); fix or remove the file") from None


def trial_from_doc(doc: dict[str, object]) -> Trial:
    tries = _int(doc.get("tries"), "tries")
    if not 1 <= tries <= MAX_TRIES:
        raise ValueError(f"'tries' is not 1..{MAX_TRIES}")
    layer = _opt_str(doc, "good_layer")
    if layer is not None and not LAYER_ID.fullmatch(layer):
        raise ValueError("'good_layer' is not a layer id")
    return Trial(_stack(doc, "stack"), _stack(doc, "good"), tries,
                 _when(doc, "armed"), _line(_str(doc, "reason")) or "unknown", layer,
                 _line(_str(doc, "failure", "")) if doc.get("failure") else "")


def trial_to_yaml(t: Trial) -> str:
    doc: dict[str, object] = {
        "format": FORMAT_VERSION, "stack": list(t.stack), "good": list(t.good),
        "tries": t.tries, "armed": _stamp(t.armed), "reason": t.reason}
    if t.good_layer:
        doc["good_layer"] = t.good_layer
    if t.failure:
        doc["failure"] = t.failure
    return dump_yaml(doc)


def fallback_from_doc(doc: dict[str, object]) -> Fallback:
    return Fallback(_stack(doc, "failed"), _stack(doc, "good"),
                    _int(doc.get("boots"), "boots"), _when(doc, "at"),
                    _line(_str(doc, "why", "")) if doc.get("why") else "")


def fallback_to_yaml(f: Fallback) -> str:
    doc: dict[str, object] = {
        "format": FORMAT_VERSION, "failed": list(f.failed), "good": list(f.good),
        "boots": f.boots, "at": _stamp(f.at)}
    if f.why:
        doc["why"] = f.why
    return dump_yaml(doc)


def layer_kernels_from_doc(
        doc: object) -> tuple[str | None, list[str], tuple[KernelRef, ...]] | None:
    """(layer id, stack, kernels) as recorded; raises on a damaged record."""
    if not isinstance(doc, dict):
        return None
    return (str(doc["layer"]) if doc.get("layer") else None,
            [check_name(str(n)) for n in doc.get("stack") or ()],
            tuple(kernel_from_doc(k) for k in doc.get("kernels") or ()))


def layer_kernels_to_yaml(layer_id: str | None, stack: Iterable[str],
                          kernels: Iterable[KernelRef]) -> str:
    doc = {"format": 1, "layer": layer_id, "stack": list(stack),
           "kernels": [kernel_to_doc(k) for k in kernels]}
    return dump_yaml(doc)


# --- fields -----------------------------------------------------------------------

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
