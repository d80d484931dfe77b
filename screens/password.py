"""The password's controller: the Shell and every action that changes the store first ask
for root's password (or the maintenance password), once per menu session, when there is
one (``maintenance.auth`` decides whose; ``auth_views.PasswordDialog`` asks)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .auth_views import PasswordDialog
from .base import ScreenController, log


class PasswordController(ScreenController):
    def authorized(self, what: str, then: Callable[[], None]) -> None:
        """Run ``then`` (the Shell, or an action that changes the store) once the session
        may: at once when a password was typed already or none is needed, else after the
        password dialog. A password that cannot be told is an error: the action stays
        locked (fail closed), the rest of the menu carries on."""
        menu = self.menu
        if menu.authenticated:
            then()
            return
        if menu.busy:
            return
        try:
            guard = menu.auth.required()
        except Exception as e:  # AuthError, or what the engine side did not foresee
            self.error(e)
            return
        if guard is None:
            then()
            return

        def submit(password: str) -> None:
            dialog.checking()

            def done(ok: Any, exc: BaseException | None) -> None:
                if exc is not None:
                    self.host.close_dialog()
                    self.error(exc)
                elif not ok:
                    dialog.wrong()
                else:
                    log.info("the %s password was given: this session is authenticated",
                             guard.kind)
                    menu.authenticated = True
                    self.host.close_dialog()
                    then()
            self.host.run_background(lambda _r: menu.auth.check(guard, password),
                                     lambda _p, _t: None, done)
        dialog = PasswordDialog(what, guard.kind, str(guard.source), submit,
                                self.host.close_dialog)
        self.host.dialog(dialog)
