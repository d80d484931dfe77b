"""Restore System's controller: read what it would do, confirm it (``restore_views``),
restore, and say what it did."""

from __future__ import annotations

from maintenance.model import Change, LayerStats, ProgressFn, RestoreResult, StatePlan

from .base import ScreenController
from .restore_views import CHANGES_SHOWN, TITLE, WORKING, confirm_view, done_page
from .views import READING_LAYER

# what Restore System would do: the layer's figures, the managed state (or why it cannot be
# read), the first changed paths, the stack
RestorePlan = tuple[LayerStats, StatePlan | str, list[Change], list[str] | None]


class RestoreController(ScreenController):
    def restore(self) -> None:
        self.authorized(TITLE, self._restore)

    def _restore(self) -> None:
        def work(_r: ProgressFn) -> RestorePlan:
            stats = self.engine.restore_plan()
            return (stats, self.state_plan(None), self.engine.changes(limit=CHANGES_SHOWN),
                    self.stack_or_none())
        self.work(READING_LAYER, "", work, self._confirm)

    def _confirm(self, plan: RestorePlan) -> None:
        stats, state, changes, tab = plan
        self.host.show(confirm_view(stats, state, changes, tab,
                                    lambda keep: self._do_restore(keep, stats), self.back))

    def _do_restore(self, keep: tuple[str, ...], shown: LayerStats | None = None) -> None:
        """``shown``: the figures the confirmation showed, reported as discarded (the
        engine then counts nothing before its commit)."""
        self.host.back()  # the confirmation

        def done(res: RestoreResult) -> None:
            self.host.show(done_page(res, self.reload))
        self.work(WORKING, "",
                  lambda _r: self.engine.restore(keep_current=keep, discarded=shown), done,
                  mutating=True, on_error=self.menu.pending.or_queue("restore", keep=keep))
