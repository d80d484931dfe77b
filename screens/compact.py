"""Compact restore points' controller: merge the incremental restore points at the top of
the stack into one image (``ibi compact``); its words are ``compact_views``."""

from __future__ import annotations

from maintenance.compact import CompactPlan
from maintenance.errors import UsageError
from maintenance.model import ImageMeta, ProgressFn, Trial

from . import compact_views
from .base import ScreenController
from .views import READING_STORE, CreateView, Dialog, Line, PickerView, result_page

# what Compact would do, and the store's images (for the choice of where it starts)
CompactShown = tuple[CompactPlan, dict[str, ImageMeta]]


class CompactController(ScreenController):
    def compact(self) -> None:
        """The plan is read first: when there is nothing to merge, that is said in a line
        (no password for nothing). Compaction leaves the writable layer alone, so it runs
        in a booted system too: nothing is queued."""
        self._read(None)

    def _read(self, first: str | None) -> None:
        def work(_r: ProgressFn) -> CompactShown:
            plan = self.engine.compact_plan(first)
            return plan, {m.name: m for m in self.engine.images()}

        def shown(res: CompactShown) -> None:
            self.authorized(compact_views.TITLE, lambda: self._ask(*res))
        self.work(READING_STORE, "", work, shown, on_error=self._nothing_to_compact)

    def _nothing_to_compact(self, exc: BaseException) -> None:
        if not isinstance(exc, UsageError):
            self.error(exc)
            return
        lines: list[Line | str] = [str(exc)]
        if exc.hint:
            lines.append(("dim", exc.hint))
        self.host.dialog(Dialog(compact_views.TITLE, lines, self.host.close_dialog))

    def _ask(self, plan: CompactPlan, metas: dict[str, ImageMeta]) -> None:
        status = self.menu.status
        free = status.disk.free if status else None
        more = ([(compact_views.PICK, lambda: self._pick_start(plan, metas))]
                if len(compact_views.starts(plan)) > 1 else [])
        self.host.show(CreateView(compact_views.TITLE, compact_views.plan_lines(plan, free),
                                  lambda name, desc: self._do_compact(plan, name, desc),
                                  self.back, action=compact_views.ACTION, more=more))

    def _pick_start(self, plan: CompactPlan, metas: dict[str, ImageMeta]) -> None:
        def picked(name: str) -> None:
            self.host.back()  # the picker
            self.host.back()  # the plan it was chosen from
            self._read(name)
        self.host.show(PickerView(compact_views.TITLE, compact_views.pick_intro(plan),
                                  compact_views.start_choices(plan, metas), picked,
                                  self.back))

    def _do_compact(self, plan: CompactPlan, name: str, description: str) -> None:
        self.host.back()  # the plan

        def work(report: ProgressFn) -> tuple[ImageMeta, Trial | None]:
            # the run as shown: a stack changed meanwhile is refused, not merged unseen
            meta = self.engine.compact(first=plan.run[0], last=plan.run[-1],
                                       name=name or None, description=description,
                                       progress=report)
            return meta, self.trial_or_none()

        def done(res: tuple[ImageMeta, Trial | None]) -> None:
            self.host.show(result_page(compact_views.DONE,
                                       compact_views.done_lines(plan, *res), self.reload))
        self.work(compact_views.working(plan), compact_views.NOTE, work, done, mutating=True)
