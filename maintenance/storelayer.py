"""The Store's writable layer and its trash: a mixin of maintenance.store.Store.

A layer directory (``layer/``, a ``layer.new/`` being prepared, or an entry of ``trash/``)
holds ``upper`` and ``work`` (the overlay's upperdir and workdir), ``id`` (the layer id)
and, once prepared for a stack, ``stack``; ``layer/kernels.yaml`` records the kernels
installed in the running system. Set-aside layers wait in ``trash/<stamp>-<id>/`` for
Undo or ibi purge. maintenance/store.py names the store's files and sets the paths this
mixin uses (``layer``, ``trash``, ``layer_kernels_path``). See docs/FORMAT.md.
"""

from __future__ import annotations

import logging
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

import yaml

from .errors import BadName, StoreError
from .fsio import atomic_write, fsync_dir, load_yaml, read_store_text
from .model import KernelRef
from .records import (
    LAYER_ID,
    layer_kernels_from_doc,
    layer_kernels_to_yaml,
    parse_roottab,
    render_roottab,
    utcnow,
)

log = logging.getLogger("maintenance.store")  # the store's log, as before the split

SQUASHED = "-squashed"  # the suffix of a trash entry a restore point cleared (no undo)


class StoreLayer:
    """The writable layer (``upper``, ``work``, its id and stack), the kernels recorded in
    it, and the trash of set-aside layers."""

    layer: Path
    trash: Path
    layer_kernels_path: Path

    # the writable layer
    @property
    def upper(self) -> Path:
        return self.layer / "upper"

    @property
    def work(self) -> Path:
        return self.layer / "work"

    def layer_id(self, layer: Path | None = None) -> str | None:
        try:
            text = read_store_text((layer or self.layer) / "id", "layer/id")
            text = text[:-1] if text.endswith("\n") else text  # the initramfs reads it
            # with `read -r`: anything but the id and one newline is a damaged id
        except (FileNotFoundError, NotADirectoryError):
            return None
        except StoreError as e:
            log.warning("%s: treated as a layer without an id", e)
            return None
        return text if LAYER_ID.fullmatch(text) else None

    def make_layer(self, path: Path) -> str:
        """Create an empty layer directory (upper, work, id) at ``path``; return its id."""
        path.mkdir(mode=0o755)
        (path / "upper").mkdir(mode=0o755)
        (path / "work").mkdir(mode=0o700)
        layer_id = secrets.token_hex(8)
        atomic_write(path / "id", layer_id + "\n")
        for d in (path / "upper", path / "work", path):
            fsync_dir(d)
        return layer_id

    def mark_layer_ready(self, path: Path, for_stack: Iterable[str]) -> None:
        """Record, last, the stack a prepared layer is for: recovery puts a ``layer.new``
        in place only when this marker matches roottab."""
        atomic_write(path / "stack", render_roottab(for_stack))

    def renew_layer_id(self) -> str:
        layer_id = secrets.token_hex(8)
        atomic_write(self.layer / "id", layer_id + "\n")
        return layer_id

    def layer_stack(self, layer: Path) -> list[str] | None:
        try:
            return parse_roottab(read_store_text(layer / "stack"))
        except (FileNotFoundError, StoreError):
            return None

    # the kernels installed in the running system (layer/kernels.yaml)
    def read_layer_kernels(self) -> tuple[str | None, list[str], tuple[KernelRef, ...]] | None:
        """The kernels installed in the writable layer: (layer id, stack, kernels) as
        recorded, or None when there is no (readable) record."""
        path = self.layer_kernels_path
        try:
            return layer_kernels_from_doc(load_yaml(read_store_text(path)))
        except FileNotFoundError:
            return None
        except (OSError, StoreError, yaml.YAMLError, KeyError, ValueError, RecursionError,
                TypeError, AttributeError, BadName):
            return None  # a damaged record: as if none (the next sync rewrites it)

    def write_layer_kernels(self, layer_id: str | None, stack: Iterable[str],
                            kernels: Iterable[KernelRef]) -> None:
        atomic_write(self.layer_kernels_path, layer_kernels_to_yaml(layer_id, stack, kernels))

    def clear_layer_kernels(self) -> bool:
        try:
            self.layer_kernels_path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(self.layer)
        return True

    # the trash: layers set aside
    def trash_entries(self) -> list[Path]:
        """The set-aside layers; a ``trash`` that is not a real directory (a symbolic link
        out of the store, say) is refused, never followed."""
        try:
            st = self.trash.lstat()
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{self.trash} is not a directory (a symbolic link?): refused",
                             hint="move it away by hand; ibi deletes only what is in the store")
        return sorted(p for p in self.trash.iterdir())

    def new_trash_slot(self, layer_id: str | None, squashed: bool = False) -> Path:
        """Where a layer set aside goes: ``<UTC stamp>-<layer id>``; a layer a restore
        point holds (being deleted) gets ``-squashed``, and is never put back."""
        self.trash.mkdir(exist_ok=True)
        self.trash_entries()  # a real directory
        stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
        same = [p for p in self.trash.iterdir() if p.name.startswith(stamp)]
        seq = f".{len(same) + 1:03d}" if same else ""  # sorts after the ones before it
        slot = self.trash / f"{stamp}{seq}-{layer_id or secrets.token_hex(4)}"
        return slot.with_name(slot.name + SQUASHED) if squashed else slot

    def set_aside_layers(self) -> list[tuple[Path, str, list[str]]]:
        """The layers Restore System, Roll back and Switch set aside that can be put back,
        newest first: (entry, layer id, the stack it was used on). A layer a restore point
        cleared, or one without its id, stack or directories, is left out."""
        out = []
        for p in reversed(self.trash_entries()):
            if p.name.endswith(SQUASHED) or p.is_symlink() or not p.is_dir():
                continue
            lid, stack = self.layer_id(p), self.layer_stack(p)
            if lid and stack and all((p / d).is_dir() and not (p / d).is_symlink()
                                     for d in ("upper", "work")):
                out.append((p, lid, stack))
        return out
