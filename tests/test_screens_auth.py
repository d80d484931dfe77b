"""The menu's password (maintenance/auth.py behind screens/controller.py): the Shell and
the actions that change the store ask for root's password, or the maintenance password,
once per session; the dialog masks what is typed, says when it is wrong and lets the user
try again, Esc cancels. The engine side is the real one, over a temp system whose shadow
file holds hashes made by libxcrypt; the host is the synchronous double."""

from __future__ import annotations

from pathlib import Path

import pytest

from maintenance.auth import Auth, hash_root_password
from screens.app import App
from screens.auth_views import PASSWORD_FOOTER, PasswordDialog
from screens.controller import Controller
from screens.main_views import MainView
from tests.menu_doubles import RecordingController, SyncHost, make_status, rows
from tests.menu_fakes import FakeEngine, password_system
from tests.menu_views_kit import NullScreen

SECRET = "correct horse"


@pytest.fixture(scope="module")
def yescrypt() -> str:
    return hash_root_password(SECRET, "$y$")


def start(tmp_path: Path, auth: Auth, engine: FakeEngine | None = None
          ) -> tuple[Controller, SyncHost, FakeEngine]:
    host = SyncHost()
    eng = engine or FakeEngine()
    ctl = Controller(host, eng, decision_path=str(tmp_path / "decision"),  # type: ignore[arg-type]
                     auth=auth)
    ctl.start()
    return ctl, host, eng


def type_password(host: SyncHost, password: str) -> None:
    host.press(*password, "enter")


def said(host: SyncHost) -> str:
    """The password dialog's words, its lines joined (a long path wraps)."""
    assert isinstance(host.dialog_widget, PasswordDialog), host.text()
    lines = rows(host.dialog_widget, (host.dialog_widget.width,))
    return " ".join(" ".join(r.strip("|").split()) for r in lines)


def test_shell_asks_for_roots_password_refuses_a_wrong_one_then_runs(
        tmp_path: Path, yescrypt: str) -> None:
    _ctl, host, _eng = start(tmp_path, password_system(tmp_path, yescrypt))
    host.press("s")
    assert host.shells == 0
    text = host.text()
    assert "The Shell needs root's password." in text
    where = f"being maintained ({tmp_path}/system/etc/shadow)."  # a long path wraps anywhere
    assert "".join(where.split()) in "".join(said(host).split())
    host.press(*"wrong")
    assert "Password: *****" in host.text() and "wrong" not in host.text()  # masked
    host.press("enter")
    assert host.shells == 0
    assert "Wrong password. Try again, or press Esc to cancel." in host.text()
    assert "Password: *" not in host.text()  # the field is empty again
    type_password(host, SECRET)
    assert host.shells == 1 and host.dialog_widget is None
    host.press("s")  # the session is authenticated: no second prompt
    assert host.shells == 2 and host.dialog_widget is None


def test_esc_cancels_and_nothing_runs(tmp_path: Path, yescrypt: str) -> None:
    _ctl, host, eng = start(tmp_path, password_system(tmp_path, yescrypt))
    host.press("s", *"half", "esc")
    assert host.shells == 0 and host.dialog_widget is None
    assert "Continue booting" in host.text() and len(host.views) == 1
    host.press("r", "esc")
    assert host.dialog_widget is None and len(host.views) == 1
    assert "restore_plan" not in eng.calls  # not even read before the password
    host.press("s")  # cancelling did not authenticate
    assert isinstance(host.dialog_widget, PasswordDialog)


@pytest.mark.parametrize("field", ["", "*", "!", "!$6$Zx$locked.hash", None])
def test_no_prompt_without_a_usable_root_password(tmp_path: Path, field: str | None) -> None:
    """Empty, locked ('!', '*'), or no shadow at all: nothing to ask (the console is
    trusted, as Ubuntu's recovery menu does; a maintenance password guards it)."""
    _ctl, host, _eng = start(tmp_path, password_system(tmp_path, field))
    host.press("s")
    assert host.shells == 1 and host.dialog_widget is None


def test_a_guarded_action_asks_once_per_session(tmp_path: Path, yescrypt: str) -> None:
    _ctl, host, eng = start(tmp_path, password_system(tmp_path, yescrypt))
    host.press("r")
    assert "Restore System needs root's password." in host.text()
    type_password(host, SECRET)
    assert "Type RESTORE and press Enter" in host.text()  # the confirmation, as before
    host.press(*"RESTORE", "enter")
    assert "System restored" in host.text()
    host.press("enter")
    for key in ("b", "d", "i", "f"):  # the other guarded actions open without a prompt
        host.press(key)
        assert not isinstance(host.dialog_widget, PasswordDialog), key
        host.press("esc")
        host.dialog_widget = None
    host.press("s")
    assert host.shells == 1
    assert "restore" in eng.calls


def test_undo_asks_for_the_password_but_nothing_to_undo_does_not(tmp_path: Path,
                                                                 yescrypt: str) -> None:
    eng = FakeEngine()
    _ctl, host, _ = start(tmp_path, password_system(tmp_path, yescrypt), eng)
    host.press("u")  # nothing set aside: said at once, nothing to guard
    assert "Nothing to undo" in host.text()
    host.press("enter")
    eng.aside.append(("20261119-120000-layer", ["base", "apps"], []))
    _ctl, host, _ = start(tmp_path, password_system(tmp_path, yescrypt), eng)  # a new look
    calls = len(eng.calls)
    host.press("u")
    assert "Undo Restore / Roll back needs root's password." in host.text()
    assert len(eng.calls) == calls  # nothing read before the password
    type_password(host, SECRET)
    assert eng.calls[calls:calls + 1] == ["undo_plan"]
    assert "Type UNDO and press Enter" in host.text()
    host.press(*"UNDO", "enter")
    assert "Undone" in host.text() and "undo" in eng.calls


def test_viewing_asks_for_nothing(tmp_path: Path, yescrypt: str) -> None:
    _ctl, host, _eng = start(tmp_path, password_system(tmp_path, yescrypt))
    for key in ("w", "v", "l", "t", "?"):
        host.press(key)
        assert not isinstance(host.dialog_widget, PasswordDialog), key
        host.press("esc")


def test_saving_the_settings_asks_but_showing_them_does_not(tmp_path: Path,
                                                            yescrypt: str) -> None:
    _ctl, host, eng = start(tmp_path, password_system(tmp_path, yescrypt))
    host.press("t")
    assert "hostname.name   web01" in host.text()
    host.press(*["backspace"] * 5, *"web02", "enter")
    assert "Saving the settings needs root's password." in host.text()
    assert "state_set" not in eng.calls
    type_password(host, SECRET)
    assert eng.state.values()["hostname.name"] == "web02"
    assert "Settings saved" in host.text()


def test_the_maintenance_password_replaces_roots(tmp_path: Path, yescrypt: str) -> None:
    auth = password_system(tmp_path, yescrypt, maintenance="maint-pw")
    _ctl, host, _eng = start(tmp_path, auth)
    host.press("s")
    text = host.text()
    assert "The Shell needs the maintenance password." in text
    assert "It was set with ibi passwd, and replaces root's password." in text
    type_password(host, SECRET)  # root's is not it
    assert host.shells == 0 and "Wrong password" in host.text()
    type_password(host, "maint-pw")
    assert host.shells == 1


def test_a_maintenance_password_guards_a_locked_root(tmp_path: Path) -> None:
    _ctl, host, _eng = start(tmp_path, password_system(tmp_path, "*", maintenance="m"))
    host.press("s")
    assert "needs the maintenance password" in host.text() and host.shells == 0


def test_an_unreadable_password_keeps_the_actions_locked(tmp_path: Path) -> None:
    auth = password_system(tmp_path)
    auth.store.auth_path.write_text("scrypt ln=15 r=8\n")
    _ctl, host, eng = start(tmp_path, auth)
    host.press("s")
    text = host.text()
    assert host.shells == 0 and "Error: the action failed" in text
    # the dialog's lines without its frame: the file's (temporary) path moves the breaks
    flat = " ".join(" ".join(ln.strip(" |+-.]").split()) for ln in text.splitlines())
    assert "the maintenance password file is garbled" in flat and "Traceback" not in text
    host.press("enter", "r")
    assert "garbled" in host.text() and "restore_plan" not in eng.calls
    host.press("enter", "c")  # Continue booting never asks
    assert host.exit_code == 0


def test_a_missing_libcrypt_keeps_the_actions_locked(tmp_path: Path, yescrypt: str) -> None:
    auth = password_system(tmp_path, yescrypt)
    auth.libcrypt = "libcrypt-missing.so.9"
    _ctl, host, _eng = start(tmp_path, auth)
    host.press("s", *SECRET, "enter")
    text = host.text()
    assert host.shells == 0 and "libcrypt-missing.so.9 cannot be loaded" in text
    assert "Traceback" not in text


def test_a_wrong_password_costs_the_delay(tmp_path: Path, yescrypt: str) -> None:
    import time

    _ctl, host, _eng = start(tmp_path, password_system(tmp_path, yescrypt, delay=0.3))
    host.press("s", *"nope")
    t0 = time.monotonic()
    host.press("enter")
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    type_password(host, SECRET)
    assert time.monotonic() - t0 < 0.3 and host.shells == 1


# ---------------------------------------------------------------------------- the dialog

def dialog_app(dialog: PasswordDialog) -> App:
    app = App("/d", screen=NullScreen())
    app.home(MainView(RecordingController(), make_status()))
    app.dialog(dialog)
    return app


def test_the_dialog_at_80x24_masks_and_waits_while_checking() -> None:
    got: list[str] = []
    cancelled: list[int] = []
    dlg = PasswordDialog("Restore System", "root", "/etc/shadow", got.append,
                         lambda: cancelled.append(1))
    app = dialog_app(dlg)
    for key in "s3cr3t?":  # letters are the password, not the menu's shortcuts
        app.frame.keypress((80, 24), key)
    screen = rows(app.frame, (80, 24))
    text = "\n".join(screen)
    assert len(screen) == 24 and all(len(r) == 80 for r in screen)
    assert "Password: *******" in text and "s3cr3t" not in text
    assert "Restore System needs root's password." in text
    assert screen[-1].startswith(PASSWORD_FOOTER)
    app.frame.keypress((80, 24), "enter")
    assert got == ["s3cr3t?"]
    dlg.checking()
    assert "Checking the password..." in "\n".join(rows(app.frame, (80, 24)))
    for key in ("x", "enter", "esc"):  # every key waits for the answer
        assert app.frame.keypress((80, 24), key) is None
    assert got == ["s3cr3t?"] and cancelled == []
    dlg.wrong()
    app.frame.keypress((80, 24), "a")
    field = [r for r in rows(dlg, (dlg.width,)) if "Password:" in r]
    assert field == ["|Password: *" + " " * 53 + "|"]
    app.frame.keypress((80, 24), "tab")  # to the buttons: OK, then Cancel
    app.frame.keypress((80, 24), "right")
    app.frame.keypress((80, 24), "enter")
    assert cancelled == [1]
