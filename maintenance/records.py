"""What the store's documents hold: image metadata, roottab, preserve and the kernels (an
image's, the layer's), parsed field by field (maintenance/fields.py) and rendered; the
names of images and kernels, and the format version every document carries.

maintenance/store.py says where each file is and reads and writes it; this module says what
is in it (the small records, pending, policy, trial and fallback: maintenance/bootrecords.py).
A damaged or hostile document raises StoreError (or ValueError inside a parse), in one line,
naming it. See docs/FORMAT.md.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable

import yaml

from .errors import BadName, StoreError
from .fields import bool_field, hex_field, opt_str_field, size_field, str_field, utc_stamp
from .fsio import dump_yaml, load_yaml, one_line
from .model import ImageMeta, KernelRef, Kind

IMAGE_EXT = ".sqfs"  # an image NAME is the file NAME.sqfs ...
META_EXT = ".yaml"  # ... with its metadata NAME.yaml
FORMAT_VERSION = 1

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
        "created": utc_stamp(meta.created),
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
    return KernelRef(version=check_kernel_id(str_field(doc, "version")),
                     id=check_kernel_id(str_field(doc, "id")),
                     vmlinuz_sha256=hex_field(str_field(doc, "vmlinuz_sha256"), "vmlinuz_sha256"),
                     initrd_sha256=hex_field(str_field(doc, "initrd_sha256"), "initrd_sha256"),
                     size=size_field(doc.get("size"), "size"),
                     source_initrd_sha256=hex_field(
                         opt_str_field(doc, "source_initrd_sha256") or "",
                         "source_initrd_sha256", empty=True))


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


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
        digest = str_field(doc, "sha256")
        if not _SHA256.fullmatch(digest):
            raise ValueError("'sha256' is not a SHA-256 digest")
        stack = doc.get("stack") or []
        if not isinstance(stack, list) or not all(isinstance(n, str) for n in stack):
            raise ValueError("'stack' is not a list of image names")
        ks = doc.get("kernels") or []
        if not isinstance(ks, list):
            raise ValueError("'kernels' is not a list")
        stamp = doc.get("source_stamp")
        parent = opt_str_field(doc, "parent")
        return ImageMeta(
            name=check_name(str_field(doc, "name")),
            kind=Kind(str_field(doc, "kind")),
            created=created,
            sha256=digest,
            size=size_field(doc.get("size"), "size"),
            description=str_field(doc, "description", "") if doc.get("description") else "",
            parent=check_name(parent) if parent else None,
            stack=tuple(check_name(n) for n in stack),
            source_layer=opt_str_field(doc, "source_layer"),
            source_stamp=None if stamp is None else size_field(stamp, "source_stamp"),
            compressor=str_field(doc, "compressor", "zstd") if doc.get("compressor") else "zstd",
            kernels=tuple(kernel_from_doc(k) for k in ks),
            pinned=bool_field(doc, "pinned"),
        )
    except (yaml.YAMLError, KeyError, ValueError, TypeError, AttributeError, OverflowError,
            RecursionError, BadName) as e:
        raise StoreError(f"{where}: unreadable metadata ({one_line(e)})") from None


# --- the layer's kernels ----------------------------------------------------------

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


def check_format(doc: dict[str, object]) -> None:
    """Refuse a document written by a newer ibi (``format`` above ours)."""
    v = doc.get("format", FORMAT_VERSION)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"format {v!r} is not a version number")
    if v > FORMAT_VERSION:
        raise ValueError(f"format {v} is newer than this ibi understands ({FORMAT_VERSION}):"
                         " use a newer ibi")
