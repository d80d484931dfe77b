"""The menu's router: the only object the app and the main screen talk to. It holds the
session (the host, the engine, the store's last reading, busy, authenticated) and hands
each menu choice to the controller of its screen, one module each, next to the views
that hold its words:

=============================  ==========================  =============================
menu entry                     controller                  words
=============================  ==========================  =============================
the main screen, Details, ?,   ``main.MainController``     ``main_views``
Shell, Continue, Reboot, Off
Restore System                 ``restore``                 ``restore_views``
Undo Restore / Roll back       ``undo``                    ``undo_views``
Create Full / Incremental      ``create``                  ``create_views``
Live Review...                 ``review``                  ``review_views``
Roll back to...                ``rollback``                ``rollback_views``
Delete restore point...,       ``images``                  ``images_views``
Verify images
Compact restore points         ``compact``                 ``compact_views``
Saved settings (state)...      ``state``                   ``state_views``
the password                   ``password``                ``auth_views``
queueing for the next boot     ``pending``                 ``pending_views``
=============================  ==========================  =============================

Only the controllers touch the Engine (``self.engine``), each through
``base.ScreenController``'s plumbing: the work runs off the UI loop, errors come back as
a one-line dialog and the menu carries on. A screen's controller (and its views) is
imported when it is first used: the first screen needs only ``main``.

The Shell and every action that changes the store first ask for root's password (or the
maintenance password), once per menu session, when there is one (``maintenance.auth``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from maintenance.auth import Auth
from maintenance.engine import Engine
from maintenance.model import Kind, Status

from .base import Done, Host, OnProgress, Work
from .main import MainController

if TYPE_CHECKING:
    from .compact import CompactController
    from .create import CreateController
    from .images import ImagesController
    from .password import PasswordController
    from .pending import PendingController
    from .restore import RestoreController
    from .review import ReviewController
    from .rollback import RollbackController
    from .state import StateController
    from .undo import UndoController

__all__ = ["Controller", "Done", "Host", "OnProgress", "Work"]


class Controller:
    def __init__(self, host: Host, engine: Engine | None = None, *,
                 data_dir: str = "/run/ibi/data", run_dir: str = "/run/ibi",
                 decision_path: str = "/run/ibi/decision",
                 boot_error: str | None = None, auth: Auth | None = None,
                 auth_root: str = "/") -> None:
        self.host = host
        self.boot_error = boot_error or None  # why the boot came to the menu, if it failed
        self.engine = engine if engine is not None else Engine(data_dir, run_dir)
        self.decision_path = decision_path
        self.status: Status | None = None
        self.problem: str | None = None
        self.can_undo = False  # a set-aside layer to put back, at the last reading
        self.busy = False
        self.help_open = False
        # who may use the Shell and the store-changing actions; authenticated once a right
        # password was typed in this session
        self.auth = auth if auth is not None else Auth(data_dir, root=auth_root)
        self.authenticated = False
        self.main = MainController(self)

    # ------------------------------------------------------------------ the session
    def start(self) -> None:
        """Read the store once (before the screen is up) and show the main view."""
        self.main.start()

    def reload(self, then: Callable[[], None] | None = None) -> None:
        """Read the store again (in the background) and go back to a fresh main view."""
        self.main.reload(then)

    def error(self, exc: BaseException,
              more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> None:
        """Show an error as a one-line dialog; the menu carries on."""
        self.main.error(exc, more)

    def back(self) -> None:
        self.main.back()

    def authorized(self, what: str, then: Callable[[], None]) -> None:
        """Run ``then`` once the session may change the store (``password``)."""
        self.password.authorized(what, then)

    # ------------------------------------------------------------------ the main screen
    def help(self) -> None:
        self.main.help()

    def details(self) -> None:
        self.main.details()

    def shell(self) -> None:
        self.main.shell()

    def continue_boot(self) -> None:
        self.main.continue_boot()

    def reboot(self) -> None:
        self.main.reboot()

    def poweroff(self) -> None:
        self.main.poweroff()

    # ------------------------------------------------------------------ the actions
    def restore(self) -> None:
        self.restore_screen.restore()

    def undo(self) -> None:
        self.undo_screen.undo()

    def create_full(self) -> None:
        self.create_screen.create(Kind.FULL)

    def create_incremental(self) -> None:
        self.create_screen.create(Kind.INCREMENTAL)

    def live_review(self) -> None:
        self.review_screen.live_review()

    def rollback(self) -> None:
        self.rollback_screen.rollback()

    def delete(self) -> None:
        self.images_screen.delete()

    def verify(self) -> None:
        self.images_screen.verify()

    def compact(self) -> None:
        self.compact_screen.compact()

    def state(self) -> None:
        self.state_screen.state()

    # ------------------------------------------------------------------ made when first used
    @cached_property
    def password(self) -> PasswordController:
        from .password import PasswordController
        return PasswordController(self)

    @cached_property
    def pending(self) -> PendingController:
        from .pending import PendingController
        return PendingController(self)

    @cached_property
    def restore_screen(self) -> RestoreController:
        from .restore import RestoreController
        return RestoreController(self)

    @cached_property
    def undo_screen(self) -> UndoController:
        from .undo import UndoController
        return UndoController(self)

    @cached_property
    def create_screen(self) -> CreateController:
        from .create import CreateController
        return CreateController(self)

    @cached_property
    def review_screen(self) -> ReviewController:
        from .review import ReviewController
        return ReviewController(self)

    @cached_property
    def rollback_screen(self) -> RollbackController:
        from .rollback import RollbackController
        return RollbackController(self)

    @cached_property
    def images_screen(self) -> ImagesController:
        from .images import ImagesController
        return ImagesController(self)

    @cached_property
    def compact_screen(self) -> CompactController:
        from .compact import CompactController
        return CompactController(self)

    @cached_property
    def state_screen(self) -> StateController:
        from .state import StateController
        return StateController(self)
