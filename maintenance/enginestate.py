"""The :class:`~maintenance.engine.Engine`'s methods for the managed config: its operators
(state.py) and its captures, what Restore System and Roll back write (capture.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from . import capture
from . import state as statemod
from .enginebase import EnginePart, changes_store
from .model import CaptureInfo, RegistryValue, StatePlan


class StateMethods(EnginePart):
    """Engine's methods for the managed config (a part of
    :class:`~maintenance.engine.Engine`)."""

    # ------------------------------------------------------------------ state operators
    def state_config(self) -> statemod.Config:
        self.store.require()
        return statemod.load_config(self.store)

    def state_plan(self, name: str | None = None,
                   keep_current: Collection[str] = ()) -> StatePlan:
        """What Restore System (or Roll back to ``name``) writes into the fresh layer for
        each managed path, beside the value the system holds now."""
        return capture.plan(self._engine, name, keep_current)

    def state_values(self) -> tuple[RegistryValue, ...]:
        """The registry's keys, with the values of the last capture."""
        return capture.values(self._engine)

    def state_captures(self) -> tuple[CaptureInfo, ...]:
        """The captures kept, newest first."""
        return capture.captures(self._engine)

    @changes_store
    def state_set(self, values: Mapping[str, str | None]) -> CaptureInfo:
        """A new capture with ``values`` ("operator.field" -> value; None removes it)
        changed: what Restore System and Roll back write from now on."""
        return capture.set_values(self._engine, values)

    @changes_store
    def state_save(self, reason: str = "save") -> CaptureInfo | None:
        """Capture the managed state of the system as it is now; None when nothing
        changed since the last capture (maintenance/capture.py)."""
        return capture.save(self._engine, reason)
