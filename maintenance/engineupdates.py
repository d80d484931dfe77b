"""The :class:`~maintenance.engine.Engine`'s methods for updates and the store's size:
importing images (imports.py), compacting restore points (compact.py), pinning and pruning
(retention.py), deleting the cleared layers (reclaim.py).
"""

from __future__ import annotations

from typing import Any

from . import reclaim, squash
from .enginebase import EnginePart, changes_store
from .model import ImageMeta, ProgressFn


class UpdateMethods(EnginePart):
    """Engine's methods for updates and the store's size (a part of
    :class:`~maintenance.engine.Engine`)."""

    # ------------------------------------------------------------------ updates
    @changes_store
    def import_image(self, source: str, *, name: str | None = None, description: str = "",
                     sha256: str | None = None,
                     progress: ProgressFn | None = None) -> ImageMeta:
        """Add a root image built elsewhere (a squashfs file, ``-`` for stdin, or an
        http(s) URL) to the store as a full image (maintenance/imports.py)."""
        from . import imports

        return imports.import_image(self._engine, source, name=name, description=description,
                                    sha256=sha256, progress=progress)

    def compact_plan(self, first: str | None = None, last: str | None = None) -> Any:
        """The run of restore points ``ibi compact`` would merge (maintenance/compact.py);
        raises UsageError when there is none."""
        from . import compact

        return compact.plan(self._engine, first, last)

    @changes_store
    def compact(self, *, first: str | None = None, last: str | None = None,
                name: str | None = None, description: str = "",
                compressor: str = squash.DEFAULT_COMPRESSOR, level: int | None = None,
                progress: ProgressFn | None = None) -> ImageMeta:
        """Merge a run of restore points at the top of the stack into one image, checked
        file by file; the run's images are kept (maintenance/compact.py)."""
        from . import compact

        eng = self._engine
        eng.recover()
        return compact.compact(eng, compact.plan(eng, first, last), name=name or "",
                               description=description, compressor=compressor,
                               level=level, progress=progress)

    @changes_store
    def pin(self, name: str, pinned: bool = True) -> ImageMeta:
        """Pin (or unpin) image ``name``: a pinned image is never deleted by prune or
        delete (maintenance/retention.py)."""
        from . import retention

        return retention.pin(self._engine, name, pinned)

    @changes_store
    def prune(self, *, dry_run: bool = False, keep_last: int | None = None,
              keep_days: int | None = None) -> Any:
        """Delete the restore points the retention policy does not keep
        (maintenance/retention.py); returns the plan it carried out."""
        from . import retention

        return retention.prune(self._engine, dry_run=dry_run, keep_last=keep_last,
                               keep_days=keep_days)

    def reclaim(self) -> int:
        """Delete the writable layers that restore points cleared; returns the bytes freed
        (maintenance/reclaim.py: the store's lock only to move them aside)."""
        return reclaim.reclaim(self._engine)

    def reclaim_later(self) -> bool:
        """Start :meth:`reclaim` in the background (not in the initramfs); whether it did."""
        return reclaim.in_background(self._engine)
