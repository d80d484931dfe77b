"""Live Review's controller: choose a restore point, say what booting it does
(``review_views``), then end the menu with the decision ``review NAME`` (or restart into
it once, when it runs another kernel)."""

from __future__ import annotations

from maintenance.errors import IbiError
from maintenance.model import ProgressFn

from . import decision
from .base import Choices, ScreenController
from .review_views import INTRO, TITLE, review_page
from .views import READING_STORE, PickerView


class ReviewController(ScreenController):
    def live_review(self) -> None:
        def shown(res: Choices) -> None:
            choices, _tab = res
            self.host.show(PickerView(TITLE, INTRO, choices, self._review_page, self.back))
        self.work(READING_STORE, "", self.choices(lambda m, t: False), shown)

    def _review_page(self, name: str) -> None:
        def work(_r: ProgressFn) -> tuple[tuple[str, ...], str | None]:
            return self.engine.review_stack(name), self.engine.review_kernel_switch(name)

        def shown(res: tuple[tuple[str, ...], str | None]) -> None:
            stack, switch = res
            self.host.show(review_page(
                name, stack, switch,
                lambda: self.decide(decision.REVIEW, name, decision.EXIT_REVIEW),
                lambda: self._restart_into(name), self.back))
        self.work(READING_STORE, "", work, shown)

    def _restart_into(self, name: str) -> None:
        try:
            self.engine.boot_once(f"ibi-review-{name}")
        except IbiError as e:
            self.error(e)
            return
        self.decide(decision.REBOOT, None, decision.EXIT_REBOOT)
