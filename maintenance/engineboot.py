"""The :class:`~maintenance.engine.Engine`'s methods for the next boot: the queued action
(pending.py), the boot trials and the fallback (trials.py, restore.py), what GRUB boots
once (bootloader.py).
"""

from __future__ import annotations

from collections.abc import Collection

from . import assemble, bootloader, pending, restore, trials
from .enginebase import EnginePart, changes_store
from .model import Fallback, ProgressFn, Trial


class BootMethods(EnginePart):
    """Engine's methods for the next boot (a part of :class:`~maintenance.engine.Engine`)."""

    # ------------------------------------------------------------------ next boot
    @changes_store
    def queue(self, action: str, *, name: str | None = None, description: str = "",
              keep: Collection[str] = (), reason: str | None = None,
              tries: int | None = None) -> None:
        """Queue an action ("restore", "incremental", "full", "rollback", "undo") for the
        next boot, replacing any queued one (maintenance/pending.py)."""
        pending.queue(self._engine, action, name=name, description=description, keep=keep,
                      reason=reason, tries=tries)

    def pending(self) -> dict[str, str] | None:
        self.store.require()
        return self.store.read_pending()

    @changes_store
    def cancel_pending(self) -> bool:
        return pending.cancel_pending(self._engine)

    @changes_store
    def run_pending(self, progress: ProgressFn | None = None) -> str | None:
        """Carry out the queued action, if any, and clear it; return what was done."""
        return pending.run_pending(self._engine, progress)

    # ------------------------------------------------------------------ boot trials
    def trial(self) -> Trial | None:
        """The trial the active stack is on, or None (no trial, or one for another stack:
        roottab changed since)."""
        return trials.trial(self._engine)

    def _arm_trial(self, new: list[str], tab: list[str], reason: str,
                   good_layer: str | None) -> None:
        trials.arm_trial(self._engine, new, tab, reason, good_layer)

    @changes_store
    def boot_ok(self) -> Trial | None:
        """Mark the active stack good: a boot of it completed (ibi-boot-ok.service).
        Returns the trial it ended."""
        return trials.boot_ok(self._engine)

    @changes_store
    def cancel_trial(self) -> Trial | None:
        """Forget the trial (the active stack is taken as good, no fallback)."""
        return trials.cancel_trial(self._engine)

    @changes_store
    def boot_failed(self, why: str) -> tuple[Trial | None, int]:
        """Record that this boot of the active stack failed its health checks; returns the
        trial (None: the stack is not on trial) and the boots counted so far."""
        return trials.boot_failed(self._engine, why)

    @changes_store
    def boot_fallback(self) -> Fallback | None:
        """The initramfs, when the stack on trial has used up its boots: the good stack
        again, with its layer if kept. Returns what was done, None when none is due."""
        return restore.boot_fallback(self._engine)

    def last_fallback(self) -> Fallback | None:
        """The last automatic fallback, while its good stack is still the active one."""
        return trials.last_fallback(self._engine)

    def review_kernel_switch(self, name: str) -> str | None:
        """The kernel a Live Review of ``name`` must boot (by GRUB), or None: the running
        one can assemble it."""
        return assemble.review_kernel_switch(self._engine, name)

    @changes_store
    def boot_once(self, entry: str) -> None:
        """Make GRUB boot its entry ``entry`` (e.g. ``ibi-review-NAME``) at the next boot."""
        self.store.require()
        bootloader.set_next_entry(self.store, entry)
