"""Frozen dataclasses and enums that the engine returns. Plain data: no I/O here."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from datetime import datetime
from typing import Any


class Kind(enum.StrEnum):
    BASE = "base"
    FULL = "full"
    INCREMENTAL = "incremental"


class Level(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclasses.dataclass(frozen=True)
class KernelRef:
    """A kernel and the initramfs (with the ibi module) that boot a stack, kept on the data
    partition in DATA/boot/kernels/<id>/ (shared by every image that has it)."""

    version: str  # uname -r, e.g. 6.12.48+deb13-amd64
    id: str  # the directory: "<version>-<12 hex digits of the two files' checksums>"
    vmlinuz_sha256: str
    initrd_sha256: str
    size: int  # bytes of vmlinuz and initrd together
    source_initrd_sha256: str = ""  # the tree's boot/initrd.img-<version> it was kept for
    # ("" if none): when the tree's changes (a rebuilt initramfs), a new copy is kept


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """The metadata stored beside each image (``<name>.yaml``)."""

    name: str
    kind: Kind
    created: datetime
    sha256: str
    size: int
    description: str = ""
    parent: str | None = None  # the image directly below, for incrementals
    stack: tuple[str, ...] = ()  # the stack (bottom first) it was made from; an
    # incremental must sit on exactly this stack, a full image stands alone
    source_layer: str | None = None  # id of the writable layer it was squashed from
    source_stamp: int | None = None  # that layer's newest ctime (ns) when it was squashed
    compressor: str = "zstd"
    kernels: tuple[KernelRef, ...] = ()  # the kernels of the system up to this image, the
    # one its entries boot first (the newest, or the one installed last)
    pinned: bool = False  # ibi pin: never deleted by ibi prune or ibi delete


@dataclasses.dataclass(frozen=True)
class Policy:
    """The store's settings (``.root_images/policy``; every key optional)."""

    boot_tries: int = 3  # boots a new stack gets to complete before the fallback (0: off)
    keep_last: int = 5  # ibi prune keeps this many newest restore points ...
    keep_days: int = 30  # ... and every one younger than this many days
    max_depth: int = 16  # images in the active stack before status asks for ibi compact


@dataclasses.dataclass(frozen=True)
class Trial:
    """A stack on trial (``.root_images/trial``): it must complete a boot (ibi boot-ok)
    within ``tries`` boots, else the initramfs falls back to ``good``."""

    stack: tuple[str, ...]  # the active stack when armed (void once roottab differs)
    good: tuple[str, ...]  # the stack to fall back to
    tries: int
    armed: datetime
    reason: str  # switch, rollback, create, undo, ...
    good_layer: str | None = None  # the id of the writable layer the good stack had
    # (set aside in trash/; put back by the fallback)
    failure: str = ""  # the last failed health check, as ibi boot-failed recorded it


@dataclasses.dataclass(frozen=True)
class Fallback:
    """What the last automatic fallback did (``.root_images/fallback``)."""

    failed: tuple[str, ...]
    good: tuple[str, ...]
    boots: int
    at: datetime
    why: str = ""


@dataclasses.dataclass(frozen=True)
class StackEntry:
    """One image as the status sees it: in the active stack or merely in the store."""

    name: str
    kind: Kind | None  # None when the metadata is missing
    created: datetime | None
    size: int
    description: str
    parent: str | None
    present: bool  # the .sqfs exists
    chain_ok: bool  # sits on exactly the stack it was made on
    problem: str | None = None
    kernels: tuple[str, ...] = ()  # kernel versions of the system up to it, booted one first


@dataclasses.dataclass(frozen=True)
class LayerStats:
    """What the writable layer holds: what a Restore System would discard."""

    path: str
    bytes: int  # allocated bytes (st_blocks * 512) of everything in the upper
    files: int  # entries in the upper that are not whiteouts (files, dirs, links, nodes)
    changed: int  # non-directory entries: new or modified files
    deleted: int  # whiteouts: paths deleted from the images below
    opaque: int  # directories that hide their lower contents
    newest: int = 0  # the newest ctime (ns) in the upper, its root included: any change
    # to the layer raises it, and no program can set a ctime back


@dataclasses.dataclass(frozen=True)
class Change:
    """One path that the writable layer adds, changes or deletes."""

    path: str  # absolute, as seen in the booted system
    what: str  # "changed", "deleted", "opaque"
    size: int


@dataclasses.dataclass(frozen=True)
class DiskUsage:
    total: int
    used: int
    free: int
    store: int  # bytes of images in the store
    layer: int  # bytes of the writable layer
    trash: int  # bytes of set-aside layers awaiting deletion


@dataclasses.dataclass(frozen=True)
class TmpfsUse:
    mountpoint: str
    total: int
    used: int
    serves: str = ""  # the overlay it is the upper of ("" when not known)

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0


@dataclasses.dataclass(frozen=True)
class RamUsage:
    total: int
    available: int
    tmpfs: tuple[TmpfsUse, ...] = ()  # every RAM file system an overlay writes to


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something ``ibi status`` and the menu's main screen report, as data: ``code`` says
    what it is (stable: scripts, the menu and tests key on it; the list:
    docs/ARCHITECTURE.md), ``data`` its figures. The engine never words it: the CLI and
    the menu do (maintenance/wording.py, screens/notice_words.py)."""

    level: Level
    code: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False,
                                             hash=False)


@dataclasses.dataclass(frozen=True)
class Status:
    data_dir: str
    stack: tuple[StackEntry, ...]  # bottom first
    other_images: tuple[StackEntry, ...]  # in the store, not in the stack (roll-forward targets)
    layer: LayerStats | None
    disk: DiskUsage
    ram: RamUsage
    notices: tuple[Notice, ...]
    boot_kernel: str | None = None  # the kernel version the next normal boot uses
    layer_kernels: tuple[str, ...] = ()  # kernels installed in the writable layer (a kernel
    # package upgraded in the running system), not in the stack's images; the first is
    # booted next; Restore System discards them
    trial: Trial | None = None  # the active stack is on trial (boot counting)
    boots: int = 0  # boots of the stack on trial counted so far
    fallback: Fallback | None = None  # the last automatic fallback, while its good stack
    # is still the active one
    pinned: tuple[str, ...] = ()  # images kept by ibi pin

    @property
    def ok(self) -> bool:
        return not any(n.level is Level.ERROR for n in self.notices)


@dataclasses.dataclass(frozen=True)
class Progress:
    """A progress report from a long action. ``total`` is 0 when unknown."""

    phase: str  # e.g. "squashing", "verifying"
    done: int
    total: int
    message: str = ""

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


ProgressFn = Callable[[Progress], None]


@dataclasses.dataclass(frozen=True)
class RestoreResult:
    discarded: LayerStats
    trash: str  # where the old layer was set aside (deleted later by purge)
    written: tuple[str, ...]  # managed paths rendered into the fresh layer (from the capture)
    kept_current: tuple[str, ...] = ()  # managed paths the owner kept as they were
    warnings: tuple[str, ...] = ()  # managed paths that could not be written, and why


@dataclasses.dataclass(frozen=True)
class UndoResult:
    """What ``ibi restore --undo`` did."""

    put_back: str  # the trash entry that is the writable layer again
    stack: tuple[str, ...]  # the stack it was used on: the active stack now
    previous: tuple[str, ...]  # the active stack before
    layer: LayerStats  # what the layer put back holds
    set_aside: str  # where the layer it replaced went (undo again puts it back)


@dataclasses.dataclass(frozen=True)
class StateItem:
    """One managed path (docs/FORMAT.md, "State"), as Restore System or Roll back would
    leave it: the value in the system as it is now (the layer being discarded) and the
    value the fresh layer gets."""

    path: str  # e.g. /etc/hostname
    operator: str  # a registry operator's name ("hostname", "timezone", ...), "stash" or
    # "reference"
    choice: str  # what ``keep_current`` names to keep this path's current value: the
    # registry operator's name, or the stash path ("" for a reference path)
    now: str  # the current value, one line ("(deleted)", "(empty)", "unparsable: ...")
    now_valid: bool  # False when deleted, empty or unparsable: never carried over
    written: str  # what the fresh layer gets, one line
    source: str  # "capture <id>", "the image" (no value captured, or a reference path),
    # or "kept" (the owner chose the current value)
    changed: bool  # whether ``written`` differs from ``now``
    can_keep: bool  # the current value may be kept instead: valid, different, not reference


@dataclasses.dataclass(frozen=True)
class StatePlan:
    capture: str | None  # the capture the values come from; None: none made yet
    created: datetime | None  # when it was made
    items: tuple[StateItem, ...]

    @property
    def choices(self) -> tuple[str, ...]:
        """The ``keep_current`` names that are allowed (each once, in order)."""
        return tuple(dict.fromkeys(i.choice for i in self.items if i.can_keep))


@dataclasses.dataclass(frozen=True)
class RegistryValue:
    """A value a registry operator keeps (``ibi state get/set``)."""

    key: str  # "<operator>.<field>", e.g. "hostname.name"
    value: str | None  # None: not captured (the image's file is used)
    operator: str
    paths: tuple[str, ...]  # the files it is rendered into
    help: str  # one line: what it is, and its syntax


@dataclasses.dataclass(frozen=True)
class CaptureInfo:
    """One capture of the managed state (DATA/state/captures/<id>/)."""

    id: str  # sortable: "<UTC stamp>-<reason>"
    created: datetime
    reason: str  # install, boot, save, restore-point, set
    stack: tuple[str, ...]  # the stack of the system it was read from
    values: tuple[RegistryValue, ...]
    stashed: tuple[str, ...]  # the stash paths it holds
    notes: tuple[str, ...]  # values not taken from the system (deleted, empty, unparsable),
    # kept from the capture before


@dataclasses.dataclass(frozen=True)
class VerifyItem:
    name: str
    ok: bool
    problem: str | None = None


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    items: tuple[VerifyItem, ...]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)


@dataclasses.dataclass(frozen=True)
class MountResult:
    target: str
    stack: tuple[str, ...]  # bottom first
    roottab: str  # which roottab was used: "roottab" or "roottab.prev"
    upper: str  # the upper directory ("tmpfs" for a review)
    review: bool = False


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, enums, datetimes and tuples to JSON-ready values (for ``--json``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for name in ("ok",):
            if hasattr(type(obj), name) and isinstance(getattr(type(obj), name), property):
                out[name] = getattr(obj, name)
        return out
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
