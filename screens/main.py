"""The main screen's controller: it reads the store's status and shows it (``main_views``),
and runs what the main screen does itself: the Details page, the help, the Shell, and the
decisions that end the menu (Continue booting, Reboot, Power off)."""

from __future__ import annotations

from collections.abc import Callable

from maintenance.errors import IbiError
from maintenance.model import ProgressFn, Status

from . import decision
from .base import ScreenController, log
from .main_views import (
    ALL_ACTIONS,
    DETAILS_SHOWN,
    RESCUE_ACTIONS,
    SHELL,
    DetailsView,
    HelpView,
    MainView,
    store_problem,
)
from .views import READING_LAYER, READING_STORE

# the store's status (or why it cannot be read), and whether Undo has a layer to put back
Loaded = tuple[Status | None, str | None, bool]


class MainController(ScreenController):
    def start(self) -> None:
        """Read the store once (before the screen is up) and show the main view."""
        self.show(self.load(lambda _p: None))

    def load(self, _report: ProgressFn) -> Loaded:
        try:
            status = self.engine.status()
        except IbiError as e:
            log.warning("status: %s", e)
            return None, store_problem(e), False
        except OSError as e:  # an unreadable disk: the menu still opens, to rescue it
            log.warning("status: %s", e, exc_info=e)
            return None, store_problem(e), False
        except Exception as e:  # a store broken in a way the engine did not foresee
            log.error("status failed", exc_info=e)
            return None, store_problem(e), False
        try:
            can_undo = self.engine.undo_plan() is not None
        except Exception as e:  # Undo stays offered: trying it says what is wrong
            log.warning("undo plan: %s", e)
            can_undo = True
        return status, None, can_undo

    def show(self, loaded: Loaded) -> None:
        menu = self.menu
        menu.status, menu.problem, menu.can_undo = loaded
        status = menu.status
        actions = ALL_ACTIONS if status is not None else RESCUE_ACTIONS
        low = status is not None and any(
            n.code == "low-space" for n in status.notices)
        self.host.home(MainView(menu, status, problem=menu.problem, actions=actions,
                                low_space=low, boot_error=menu.boot_error,
                                disabled=() if menu.can_undo else ("undo",)))

    def reload(self, then: Callable[[], None] | None = None) -> None:
        """Read the store again (in the background) and go back to a fresh main view."""
        def done(loaded: Loaded) -> None:
            self.show(loaded)
            if then is not None:
                then()
        self.work(READING_STORE, "", self.load, done)

    def help(self) -> None:
        menu = self.menu
        if menu.help_open:
            return
        menu.help_open = True

        def close() -> None:
            menu.help_open = False
            self.host.close_dialog()
        self.host.dialog(HelpView(close))

    def details(self) -> None:
        notices = self.menu.status.notices if self.menu.status else ()
        self.work(READING_LAYER, "", lambda _r: self.engine.changes(limit=DETAILS_SHOWN),
                  lambda ch: self.host.show(DetailsView(notices, ch, DETAILS_SHOWN,
                                                        self.back)))

    # ------------------------------------------------------------------ the Shell
    def shell(self) -> None:
        self.authorized(SHELL, self._shell)

    def _shell(self) -> None:
        how = self.host.run_shell()
        log.info("shell: %s", how)
        self.reload()

    # ------------------------------------------------------------------ ending the menu
    def continue_boot(self) -> None:
        self.decide(decision.NORMAL, None, decision.EXIT_NORMAL)

    def reboot(self) -> None:
        self.decide(decision.REBOOT, None, decision.EXIT_REBOOT)

    def poweroff(self) -> None:
        self.decide(decision.POWEROFF, None, decision.EXIT_POWEROFF)
