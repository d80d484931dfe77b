"""Saved settings (state)'s controller: read the registry's values, its captures and the
managed paths, show them (``state_views.StateView``), and save changed values as a new
capture (``ibi state set``)."""

from __future__ import annotations

from maintenance.model import CaptureInfo, RegistryValue, StatePlan

from .base import ScreenController
from .state_views import READING, SAVED, SAVING, StateView, saved_lines
from .views import result_page

Shown = tuple[tuple[RegistryValue, ...], tuple[CaptureInfo, ...], StatePlan]


class StateController(ScreenController):
    def state(self) -> None:
        def shown(res: Shown) -> None:
            self.host.show(StateView(*res, on_save=self._save, on_back=self.back))
        self.work(READING, "", lambda _r: (self.engine.state_values(),
                                           self.engine.state_captures(),
                                           self.engine.state_plan()), shown)

    def _save(self, values: dict[str, str | None]) -> None:
        """Make a new capture with the changed values. A refused value (UsageError) is a
        dialog over the settings, whose fields keep what was typed."""
        def done(info: CaptureInfo) -> None:
            self.host.back()  # the settings, with their old values
            self.host.show(result_page(SAVED, saved_lines(info, values), self.reload))
        self.authorized(SAVING, lambda: self.work(
            SAVING, "", lambda _r: self.engine.state_set(values), done))
