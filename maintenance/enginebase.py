"""What the parts of the :class:`~maintenance.engine.Engine` share: the store's lock
(:func:`changes_store`) and the base of the classes Engine is assembled from
(:class:`EnginePart`: engineboot.py, enginestate.py, engineupdates.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from .store import Store

if TYPE_CHECKING:
    from .engine import Engine

F = TypeVar("F", bound=Callable[..., Any])


def changes_store(method: F) -> F:
    """Run ``method`` holding the store's lock (once per engine: the actions call each
    other)."""
    @functools.wraps(method)
    def locked(self: Engine, *args: Any, **kwargs: Any) -> Any:
        if self._locked or not self.store.exists():
            return method(self, *args, **kwargs)
        with self.store.locked(self.lock_wait):
            self._locked = True
            try:
                return method(self, *args, **kwargs)
            finally:
                self._locked = False
    return locked  # type: ignore[return-value]


class EnginePart:
    """A group of :class:`~maintenance.engine.Engine`'s methods, by concern; Engine inherits
    them all, so every caller still calls ``eng.<method>``."""

    store: Store  # set by Engine.__init__

    @property
    def _engine(self) -> Engine:
        """``self``, typed as the Engine it is part of (what the concern modules take)."""
        return cast("Engine", self)
