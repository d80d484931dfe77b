"""Queueing an action for the next boot: when the writable layer is in use (the menu runs in
a booted system, not in Maintenance Mode), Restore, Roll back, Undo and Create offer to
queue themselves (``.root_images/pending``, run before the root is built) instead."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from maintenance.errors import InUse

from .base import ScreenController
from .pending_views import QUEUE, QUEUED, QUEUEING, queued_lines
from .views import Line, result_page


class PendingController(ScreenController):
    def or_queue(self, action: str, name: str | None = None, description: str = "",
                 keep: Sequence[str] = (), said: Sequence[Line | str] = ()
                 ) -> Callable[[BaseException], None]:
        """An error handler for Restore, Roll back, Undo and Create: when the writable
        layer is in use, offer to queue the action for the next boot instead, with the
        same "keep current" choices. ``said``: what the page after says (else: the next
        boot runs ``action``)."""
        def handler(exc: BaseException) -> None:
            if not isinstance(exc, InUse):
                self.error(exc)
                return

            def queue() -> None:
                self.host.close_dialog()
                self.authorized(QUEUEING, lambda: self.work(
                    QUEUEING, "",
                    lambda _r: self.engine.queue(action, name=name or None,
                                                 description=description, keep=tuple(keep)),
                    lambda _res: self.host.show(result_page(
                        QUEUED, queued_lines(action, said), self.reload))))
            self.error(exc, more=[(QUEUE, queue)])
        return handler
