"""Undo's controller: put back the writable layer the last Restore, Roll back, Switch or
fallback set aside (``ibi restore --undo``); its words are ``undo_views``."""

from __future__ import annotations

from maintenance.errors import IbiError
from maintenance.model import LayerStats, ProgressFn, Trial, UndoResult

from . import undo_views
from .base import ScreenController, log
from .undo_views import UndoPlan
from .views import ConfirmView, Dialog, result_page

# what Undo would do: its plan, the current layer's figures, the stack, the trial it is on
UndoShown = tuple[UndoPlan, LayerStats | None, list[str] | None, Trial | None]


class UndoController(ScreenController):
    def undo(self) -> None:
        """When the last reading found no layer to put back, say so at once (no password
        for nothing)."""
        if not self.menu.can_undo:
            self._nothing_to_undo()
            return
        self.authorized(undo_views.TITLE, self._undo)

    def _nothing_to_undo(self) -> None:
        self.host.dialog(Dialog(undo_views.TITLE, undo_views.NOTHING, self.host.close_dialog))

    def _undo(self) -> None:
        def work(_r: ProgressFn) -> UndoShown | None:
            plan = self.engine.undo_plan()
            if plan is None:
                return None
            try:
                now: LayerStats | None = self.engine.restore_plan()
            except (IbiError, OSError) as e:  # a missing layer: Undo may still help
                log.warning("layer: %s", e)
                now = None
            return plan, now, self.stack_or_none(), self.trial_or_none()

        def shown(res: UndoShown | None) -> None:
            if res is None:  # purged since the main screen was drawn
                self.menu.can_undo = False
                self._nothing_to_undo()
                return
            self.host.show(ConfirmView(undo_views.TITLE, undo_views.confirm_lines(*res),
                                       undo_views.WORD, self._do_undo, self.back))
        self.work(undo_views.READING, "", work, shown)

    def _do_undo(self) -> None:
        self.host.back()  # the confirmation

        def work(_r: ProgressFn) -> tuple[UndoResult, Trial | None]:
            return self.engine.undo(), self.trial_or_none()

        def done(res: tuple[UndoResult, Trial | None]) -> None:
            self.host.show(result_page(undo_views.DONE, undo_views.done_lines(*res),
                                       self.reload))
        self.work(undo_views.WORKING, "", work, done, mutating=True,
                  on_error=self.menu.pending.or_queue("undo", said=undo_views.QUEUED))
