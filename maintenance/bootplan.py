"""The boot plan: the one file the initramfs reads (docs/FORMAT.md, "boot plan").

The engine is the only reader of roottab and the image metadata. Whenever either changes it
writes ``.root_images/bootplan``, plain text that says, for every way of booting, which
images to mount, bottom first; the initramfs shell executes it without parsing anything
else of the store::

    ibi-boot-plan 1
    roottab 3061231284 97          # POSIX cksum of roottab when the plan was made
    layer 5f0c8e1d2a3b4c6d         # the writable layer's id then (its kernels count)
    image base 415236096 9f86d0... # each image's size and SHA-256 (its metadata), checked
    image inc1 1048576 2c26b4...   #   before it is mounted
    normal base inc1 inc2          # the active stack (roottab)
    fallback base inc1             # roottab.prev, when it differs and is usable
    menu base inc1 inc2            # stacks the menu can run from, best first
    menu base inc1
    review inc1 base inc1          # Live Review of inc1: its stack
    review base base
    trial 3                        # the normal stack is on trial: boots it may try
    good base inc1                 # the stack the initramfs falls back to after them

A plan whose ``roottab`` checksum differs from the file (a power cut between the commit of
roottab and the plan, or roottab edited by hand), or whose ``layer`` differs from the
writable layer's id (a power cut between Restore System's swap of the layer and the boot
files: GRUB's menu may still boot a kernel the set-aside layer held), is stale: the
initramfs then asks the image's own ``ibi boot-entries --write`` to renew it (and GRUB's
menu) before booting.

The initramfs refuses an image whose file size differs from its ``image`` line or whose
squashfs superblock is not sane (and with ``rd.ibi.verify=sha256`` one whose SHA-256
differs). ``review_size_kib`` is the rule the initramfs sizes a Live Review's tmpfs by.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IbiError, NotFound, StoreError, UsageError
from .fsio import atomic_write
from .model import Kind
from .store import BOOTPLAN, Store

PLAN_VERSION = 1
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Review:
    name: str
    kind: str
    created: str  # "YYYY-MM-DD HH:MM" UTC, for the boot menu's titles
    stack: tuple[str, ...]


@dataclass(frozen=True)
class ImageCheck:
    """What the initramfs checks an image against before it mounts it (its metadata)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BootPlan:
    roottab_cksum: tuple[int, int] | None  # (crc, length) of roottab; None if missing
    normal: tuple[str, ...] | None  # None: roottab unusable
    fallback: tuple[str, ...] | None
    menu: tuple[tuple[str, ...], ...]
    reviews: tuple[Review, ...] = field(default=())  # newest first
    layer_id: str | None = None  # the writable layer's id when the plan was made
    images: tuple[ImageCheck, ...] = ()  # by name
    trial: int | None = None  # the normal stack is on trial: the boots it may try
    good: tuple[str, ...] | None = None  # with a trial: the stack to fall back to


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


_TABLE = _crc_table()


def posix_cksum(data: bytes) -> tuple[int, int]:
    """What POSIX ``cksum`` prints for ``data``: (CRC, length in bytes)."""
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[(crc >> 24) ^ b]
    n = len(data)
    while n:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _TABLE[(crc >> 24) ^ (n & 0xFF)]
        n >>= 8
    return (~crc) & 0xFFFFFFFF, len(data)


def _usable(st: Store, prev: bool) -> tuple[str, ...] | None:
    try:
        tab = st.read_roottab(prev=prev)
    except StoreError:
        return None
    return tuple(tab) if all(st.has_image(n) for n in tab) else None


def stack_for(st: Store, name: str, tab: tuple[str, ...] | None) -> tuple[str, ...]:
    """The stack (bottom first) ending at image ``name``: the roottab up to it, or for an
    image outside roottab the stack in its metadata plus itself."""
    if tab is not None and name in tab:
        return tab[: tab.index(name) + 1]
    if not st.has_image(name):
        raise NotFound(f"no image named {name!r} in the store")
    meta = st.read_meta(name)
    below = meta.stack if meta.kind is Kind.INCREMENTAL else ()
    for n in below:
        if not st.has_image(n):
            raise NotFound(f"{name!r} needs image {n!r}, which is missing")
    return (*below, name)


def build(st: Store) -> BootPlan:
    """The plan for the store as it is now (images that cannot be assembled are left out)."""
    try:
        cksum: tuple[int, int] | None = posix_cksum(st.roottab_path.read_bytes())
    except FileNotFoundError:
        cksum = None
    normal = _usable(st, prev=False)
    fallback = _usable(st, prev=True)
    if fallback == normal:
        fallback = None
    menu: list[tuple[str, ...]] = [s for s in (normal, fallback) if s]
    reviews = []
    metas = []
    for n in st.image_names():
        if st.has_image(n) and (m := st.try_meta(n)) is not None:
            metas.append(m)
    for m in sorted(metas, key=lambda m: (m.created, m.name), reverse=True):
        with contextlib.suppress(IbiError):
            stack = stack_for(st, m.name, normal)
            reviews.append(Review(m.name, m.kind.value,
                                  m.created.strftime("%Y-%m-%d %H:%M"), stack))
            if m.kind in (Kind.BASE, Kind.FULL) and (m.name,) not in menu:
                menu.append((m.name,))
    images = tuple(ImageCheck(m.name, m.size, m.sha256)
                   for m in sorted(metas, key=lambda m: m.name)
                   if m.size >= 0 and _SHA256.fullmatch(m.sha256))
    trial, good = _trial(st, normal)
    if good and good not in menu:  # the fallback runs the good stack's own ibi
        menu.insert(1, good)
    return BootPlan(cksum, normal, fallback, tuple(menu), tuple(reviews), st.layer_id(),
                    images, trial, good)


def _trial(st: Store, normal: tuple[str, ...] | None
           ) -> tuple[int | None, tuple[str, ...] | None]:
    """The trial's lines: only while the normal stack is the one on trial and the good
    stack can be assembled (else there is nothing to fall back to)."""
    try:
        t = st.read_trial()
    except StoreError:
        return None, None
    if t is None or normal is None or t.stack != normal or t.good == normal:
        return None, None
    if not all(st.has_image(n) for n in t.good):
        return None, None
    return t.tries, t.good


def render(plan: BootPlan) -> str:
    lines = [
        "# ibi boot plan: written by the engine whenever roottab or the images change.",
        "# The initramfs reads only this file. Stacks are listed bottom first.",
        f"ibi-boot-plan {PLAN_VERSION}",
    ]
    if plan.roottab_cksum is not None:
        lines.append(f"roottab {plan.roottab_cksum[0]} {plan.roottab_cksum[1]}")
    if plan.layer_id and plan.layer_id.isalnum():
        lines.append(f"layer {plan.layer_id}")
    # older initramfs ignore these lines (they read only the keywords they know)
    lines += [f"image {i.name} {i.size} {i.sha256}" for i in plan.images]
    if plan.normal:
        lines.append("normal " + " ".join(plan.normal))
    if plan.fallback:
        lines.append("fallback " + " ".join(plan.fallback))
    lines += ["menu " + " ".join(s) for s in plan.menu]
    lines += [f"review {r.name} " + " ".join(r.stack) for r in plan.reviews]
    if plan.trial and plan.good:
        lines.append(f"trial {plan.trial}")
        lines.append("good " + " ".join(plan.good))
    return "\n".join(lines) + "\n"


def path(st: Store) -> Path:
    return st.root / BOOTPLAN


def write(st: Store) -> bool:
    """Write the plan if it changed (durably); returns whether it was written."""
    text = render(build(st))
    if is_current(st, text):
        return False
    atomic_write(path(st), text)
    return True


def is_current(st: Store, text: str | None = None) -> bool:
    """Whether the plan on disk is the one the store calls for (a damaged file is not)."""
    try:
        on_disk = path(st).read_bytes()
    except OSError:
        return False
    return on_disk == (text if text is not None else render(build(st))).encode()


# --- the Live Review's tmpfs -------------------------------------------------------------

MIN_REVIEW_KIB = 64 * 1024
_REVIEW_SIZE = re.compile(r"0*([0-9]{1,9})([%kKmMgG])")
_UNITS = {"k": 1, "m": 1024, "g": 1024 * 1024}


def meminfo_kib(text: str) -> dict[str, int]:
    """The ``/proc/meminfo`` figures (kB) by name (``MemTotal``, ``MemAvailable``...)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        with contextlib.suppress(ValueError, IndexError):
            out[key.strip()] = int(rest.split()[0])
    return out


def review_size_kib(spec: str | None, meminfo: str) -> tuple[int, str]:
    """The size in KiB of a Live Review's tmpfs, and how it was reached; the initramfs
    (ibi-lib.sh, ``ibi_review_size``, with ``rd.ibi.review_size=``) follows the same rule.

    ``spec`` None: half of MemAvailable (MemFree on kernels without it); ``N%``: N percent
    of MemTotal, N 1..90; ``N`` + ``K``/``M``/``G``: N KiB/MiB/GiB (N up to 9 digits,
    leading zeros ignored). Never under 64 MiB; rounded down to 4 KiB. Anything else is a
    UsageError (the initramfs warns and takes the default instead)."""
    mem = meminfo_kib(meminfo)
    if spec is None:
        avail = mem.get("MemAvailable", mem.get("MemFree", 0))
        kib, why = avail // 2, f"half of MemAvailable {avail} kB"
    else:
        m = _REVIEW_SIZE.fullmatch(spec)
        n = int(m.group(1)) if m else 0
        if m is None or n == 0 or (m.group(2) == "%" and n > 90):
            raise UsageError(f"review size {spec!r} is not N% (1..90) or a size like 512M or 2G")
        if m.group(2) == "%":
            total = mem.get("MemTotal", 0)
            kib, why = total * n // 100, f"{spec} of MemTotal {total} kB"
        else:
            kib, why = n * _UNITS[m.group(2).lower()], spec
    if kib < MIN_REVIEW_KIB:
        kib, why = MIN_REVIEW_KIB, f"{why}, raised to the 64 MiB minimum"
    return kib // 4 * 4, why
