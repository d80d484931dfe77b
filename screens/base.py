"""What every screen's controller shares: the host it shows views on, the engine it calls,
and the plumbing of an action (work off the UI loop behind a progress view, errors as a
dialog, the password, the decision that ends the menu).

Every engine call runs through ``host.run_background`` (a worker thread, off the UI loop)
so the screen stays responsive; errors come back as a one-line dialog and the menu carries
on. The host (``screens.app.App``, or a synchronous double in the tests) owns urwid: it
shows views, stacks them for Esc, runs work in the background, runs the shell and ends the
loop. The session's state (the store's last reading, busy, authenticated) lives on the
router, ``controller.Controller``, that made the screen's controller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import urwid

from maintenance.errors import IbiError
from maintenance.model import ImageMeta, Kind, Progress, ProgressFn, StatePlan, Trial

from . import decision
from .views import ProgressView, error_dialog, image_choice, image_place

if TYPE_CHECKING:
    from .controller import Controller

# one logger for the menu's controllers, as when they were one class
log = logging.getLogger("screens.controller")

Work = Callable[[ProgressFn], Any]
Done = Callable[[Any, BaseException | None], None]
OnProgress = Callable[[Progress | None, float], None]
# the restore points a picker offers (name, label), and the stack (None: unreadable)
Choices = tuple[list[tuple[str, str]], list[str] | None]


class Host(Protocol):
    def show(self, view: urwid.Widget) -> None: ...  # push a view (Esc pops it)
    def home(self, view: urwid.Widget) -> None: ...  # drop every view, show this one
    def back(self) -> None: ...  # pop the top view (never the last)
    def dialog(self, widget: urwid.Widget) -> None: ...  # over the current view
    def close_dialog(self) -> None: ...
    def run_background(self, work: Work, on_progress: OnProgress, on_done: Done) -> None: ...
    def run_shell(self) -> str: ...  # returns a line saying how the shell ended
    def exit(self, code: int) -> None: ...


class ScreenController:
    """The base of each screen's controller: ``menu`` is the router that made it."""

    def __init__(self, menu: Controller) -> None:
        self.menu = menu
        self.host: Host = menu.host
        self.engine = menu.engine

    # ------------------------------------------------------------------ plumbing
    def work(self, title: str, note: str, work: Work, on_done: Callable[[Any], None],
             *, mutating: bool = False,
             on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run ``work`` off the UI loop behind a progress view; hand its result to
        ``on_done`` or show its error. After a failed ``mutating`` action the store is read
        again before the error is shown (the action may have got part of the way)."""
        menu = self.menu
        if menu.busy:
            return
        view = ProgressView(title, note)
        menu.busy = True
        self.host.show(view)

        def done(result: Any, exc: BaseException | None) -> None:
            menu.busy = False
            self.host.back()
            show = on_error or self.error
            if exc is None:
                on_done(result)
            elif mutating:
                menu.reload(then=lambda: show(exc))
            else:
                show(exc)

        self.host.run_background(work, view.update, done)

    def error(self, exc: BaseException,
              more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> None:
        """Show an error as a one-line dialog; the menu carries on."""
        if isinstance(exc, IbiError):
            log.warning("action failed: %s", exc)
        elif isinstance(exc, OSError):
            log.warning("action failed: %s", exc, exc_info=exc)
        else:
            log.error("internal error", exc_info=exc)
        self.host.dialog(error_dialog(exc, self.host.close_dialog, more))

    def back(self) -> None:
        if not self.menu.busy:
            self.host.back()

    def reload(self) -> None:
        """Read the store again and go back to a fresh main view."""
        self.menu.reload()

    def authorized(self, what: str, then: Callable[[], None]) -> None:
        """Run ``then`` once the session may change the store (``password``)."""
        self.menu.authorized(what, then)

    def decide(self, what: str, name: str | None, code: int) -> None:
        """Write the menu's decision and end it with ``code``."""
        try:
            line = decision.write_decision(self.menu.decision_path, what, name)
        except OSError as e:
            self.error(OSError(f"cannot write the decision file {self.menu.decision_path}: "
                               f"{e.strerror or e}"))
            return
        log.info("decision: %s (exit %d)", line, code)
        self.host.exit(code)

    # ------------------------------------------------------------------ engine readings
    def stack_or_none(self) -> list[str] | None:
        try:
            return self.engine.roottab()
        except IbiError:
            return None

    def trial_or_none(self) -> Trial | None:
        """The trial the active stack is on (after an action: done all the same when it
        cannot be read; the main screen says more)."""
        try:
            return self.engine.trial()
        except IbiError as e:
            log.warning("trial: %s", e)
            return None

    def state_plan(self, name: str | None) -> StatePlan | str:
        """What Restore (``name`` None) or Roll back to ``name`` writes for each managed
        path, or why that cannot be read: the confirmation still shows then, with the
        reason (a rescue must not stop at unreadable settings)."""
        try:
            return self.engine.state_plan(name)
        except IbiError as e:
            log.warning("state plan: %s", e)
            return str(e)
        except Exception as e:  # OSError, or state the engine did not foresee
            log.error("state plan failed", exc_info=e)
            return f"{type(e).__name__}: {e}"

    def choices(self, exclude: Callable[[ImageMeta, list[str]], bool]
                ) -> Callable[[ProgressFn], Choices]:
        """Work that lists the restore points a picker offers, newest first, less those
        ``exclude(meta, stack)`` leaves out."""
        def work(_r: ProgressFn) -> Choices:
            metas = self.engine.images()
            tab = self.stack_or_none() or []
            users = {m.name: [u.name for u in metas
                              if u.kind is Kind.INCREMENTAL and m.name in u.stack]
                     for m in metas}
            out = []
            for m in reversed(metas):  # newest first
                if exclude(m, tab):
                    continue
                out.append((m.name, image_choice(m, image_place(m, tab), users[m.name])))
            return out, tab
        return work
