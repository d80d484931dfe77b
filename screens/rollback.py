"""Roll back's controller: choose a restore point, confirm (``rollback_views``), make the
stack end there, and say what it did."""

from __future__ import annotations

from maintenance.model import Change, ImageMeta, LayerStats, ProgressFn, StatePlan, Trial

from . import rollback_views
from .base import Choices, ScreenController
from .restore_views import CHANGES_SHOWN
from .views import READING_STORE, PickerView

# what Roll back would do: the new stack, the layer's figures, the managed state (or why it
# cannot be read), the first changed paths, the stack now
RollbackPlan = tuple[tuple[str, ...], LayerStats, StatePlan | str, list[Change],
                     list[str] | None]


def _on_top(m: ImageMeta, tab: list[str]) -> bool:
    return bool(tab) and m.name == tab[-1]


class RollbackController(ScreenController):
    def rollback(self) -> None:
        self.authorized(rollback_views.TITLE, self._rollback)

    def _rollback(self) -> None:
        def shown(res: Choices) -> None:
            choices, tab = res
            self.host.show(PickerView(rollback_views.PICK, rollback_views.pick_intro(tab),
                                      choices, self._confirm, self.back))
        self.work(READING_STORE, "", self.choices(_on_top), shown)

    def _confirm(self, name: str) -> None:
        def work(_r: ProgressFn) -> RollbackPlan:
            new = self.engine.review_stack(name)
            stats = self.engine.restore_plan()
            return (new, stats, self.state_plan(name),
                    self.engine.changes(limit=CHANGES_SHOWN), self.stack_or_none())

        def shown(res: RollbackPlan) -> None:
            new, stats, state, changes, tab = res
            self.host.show(rollback_views.confirm_view(
                name, new, stats, state, changes, tab,
                lambda keep: self._do_rollback(name, keep), self.back))
        self.work(READING_STORE, "", work, shown)

    def _do_rollback(self, name: str, keep: tuple[str, ...]) -> None:
        self.host.back()  # confirmation
        self.host.back()  # picker

        def work(_r: ProgressFn) -> tuple[tuple[str, ...], Trial | None]:
            return self.engine.rollback(name, keep_current=keep), self.trial_or_none()

        def done(res: tuple[tuple[str, ...], Trial | None]) -> None:
            self.host.show(rollback_views.done_page(*res, self.reload))
        self.work(rollback_views.working(name), "", work, done, mutating=True,
                  on_error=self.menu.pending.or_queue("rollback", name, keep=keep))
