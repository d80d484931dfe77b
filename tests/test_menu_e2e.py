"""End to end: the real ``python -m screens`` in a pseudo-terminal (pexpect), its screen read
through pyte, driven by keys, on a real store built by the engine (root: mksquashfs, and a
private mount namespace entered by conftest). The child menu inherits that namespace.

Here: the menu's first screens on a store (create, restore, Live Review, the cancelled
confirmations, a broken chain) and without one (the rescue actions, the Shell and its
password, the terminal, Ctrl-C, SIGTERM); Roll back, Delete, Verify, Undo, the trial, the
queue and Compact are in tests/test_menu_e2e_stack.py, the shared kit in
tests/menu_e2e_kit.py."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from maintenance.engine import Engine
from maintenance.model import Kind
from screens import decision
from tests import menu_e2e_kit
from tests.conftest import require_root
from tests.menu_e2e_kit import change, menu_args
from tests.menu_tui import Tui

pytestmark = pytest.mark.tui

# the fixtures, by name: pytest finds them in this module
_tools = menu_e2e_kit._tools
store = menu_e2e_kit.store


@pytest.mark.root
def test_create_incremental_point_shows_in_stack(store: Engine, tmp_path: Path) -> None:
    change(store, "etc/app/main.conf", "level = 2\n")
    change(store, "srv/new-file", "new\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("> c Continue booting", "writable layer")
        assert "2 changed files" in screen
        t.press("i")
        t.wait_for("Create Incremental Restore Point", "Description:")
        t.type("from the tui")
        t.press("tab")
        t.type("tui-point")
        t.press("enter")
        t.wait_for("Restore point created", "incremental restore point tui-point")
        t.press("enter")
        screen = t.wait_for("Image stack", "tui-point")
        row = next(r for r in screen.splitlines() if "tui-point" in r)
        assert row.split()[:3] == ["2", "tui-point", "incremental"]
        assert "from the tui" in row
        assert "0 changed files" in screen
        t.press("c")
        assert t.wait_exit() == decision.EXIT_NORMAL
    assert store.roottab() == ["base", "tui-point"]
    assert (tmp_path / "decision").read_text() == "normal\n"


@pytest.mark.root
def test_restore_system_empties_the_writable_layer(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/new-file", "new\n")
    change(store, "var/lib/state", "2\n")
    (store.data_dir / "home" / "user-file").write_text("mine\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("2 changed files")
        t.press("r")
        screen = t.wait_for("Type RESTORE and press Enter")
        assert "/home: every user's files" in screen and "the image stack: base" in screen
        assert "Saved settings" in screen
        for _ in range(5):  # the discarded paths come last, after the saved settings
            if "/srv/new-file" in t.text and "/var/lib/state" in t.text:
                break
            t.press("pgdn")
        t.wait_for("/srv/new-file", "/var/lib/state")
        t.type("RESTORE")
        t.press("enter")
        t.wait_for("System restored", "The writable layer is now fresh")
        t.press("enter")
        t.wait_for("0 changed files, 0 deleted")
        t.press("c")
        assert t.wait_exit() == 0
    assert store.changes() == []
    assert (store.data_dir / "home" / "user-file").read_text() == "mine\n"


@pytest.mark.root
def test_live_review_of_an_older_point(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/second", "2\n")
    store.create(Kind.INCREMENTAL, name="second", description="second point")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("second point")
        t.press("l")
        screen = t.wait_for("Choose the restore point")
        assert screen.index("> second") < screen.index("base")
        t.press("down", "enter")
        screen = t.wait_for("Live Review of base", "stack: base")
        assert "tmpfs" in screen and "Nothing is kept" in screen
        t.press("enter")
        assert t.wait_exit() == decision.EXIT_REVIEW
    assert (tmp_path / "decision").read_text() == "review base\n"
    assert store.roottab() == ["base", "second"]


@pytest.mark.root
def test_cancelled_confirmations_change_nothing(store: Engine, tmp_path: Path) -> None:
    change(store, "srv/x", "x\n")
    store.create(Kind.INCREMENTAL, name="second")
    change(store, "srv/y", "y\n")
    before = (store.roottab(), store.changes())
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        t.wait_for("second")
        t.press("r")
        t.wait_for("Type RESTORE")
        t.type("RESTO")
        t.press("esc")
        t.wait_for("> c Continue booting")
        t.press("b")
        t.wait_for("Roll back to...", "> base")
        t.press("enter")
        t.wait_for("The stack becomes: base", "Type ROLLBACK")
        t.type("rollback")
        t.press("enter")
        t.wait_for("Type ROLLBACK exactly")
        t.press("tab", "enter")  # the Cancel button
        t.wait_for("Choose the restore point")
        t.press("esc")
        t.wait_for("> c Continue booting")
        assert not (tmp_path / "decision").exists()
        t.press("c")
        assert t.wait_exit() == 0
    assert (store.roottab(), store.changes()) == before


@pytest.mark.root
def test_broken_chain_is_flagged(store: Engine, tmp_path: Path) -> None:
    (store.store.root / "roottab").write_text("base\nghost\n")
    with Tui(menu_args(store.data_dir, tmp_path)) as t:
        screen = t.wait_for("ghost", "> c Continue booting")
        assert "!! ghost: image file is missing" in screen
        row = next(r for r in screen.splitlines() if "! ghost" in r)
        assert "missing" in row
        t.press("c")
        assert t.wait_exit() == 0


def test_ibi_menu_runs_the_menu(tmp_path: Path) -> None:
    """``ibi menu`` is the menu (``ibi-menu``, run in its place): the engine package starts
    it without importing it."""
    data = Path(tempfile.mkdtemp(prefix="ibi-m-"))
    try:
        with Tui(["menu", *menu_args(data, tmp_path)],
                 command=("-m", "maintenance.cli")) as t:
            screen = t.wait_for("The image store cannot be used", "> c Continue booting")
            assert f"no ibi store in {data} (no .root_images/)" in screen
    finally:
        data.rmdir()


def test_missing_store_opens_with_the_problem(tmp_path: Path) -> None:
    data = Path(tempfile.mkdtemp(prefix="ibi-m-"))  # short: the message names it whole
    try:
        # as the initramfs runs it after a failed boot (dracut-module/90ibi/ibi-assemble.sh)
        with Tui(menu_args(data, tmp_path), term="vt220",
                 env={"IBI_BOOT_ERROR": "cannot boot: roottab is missing"}) as t:
            screen = t.wait_for("The image store cannot be used", "> c Continue booting")
            assert "!! The boot failed:" in screen
            assert "cannot boot: roottab is missing" in screen
            assert f"no ibi store in {data} (no .root_images/)" in screen
            assert "(create one with: ibi init)" in " ".join(screen.split())
            check_rescue(t, screen)
    finally:
        data.rmdir()


def check_rescue(t: Tui, screen: str) -> None:
    assert "Shell" in screen and "Roll back to..." in screen and "Restore System" in screen
    assert "Create Full" not in screen
    t.press("r")  # what can still be tried says why it fails, and the menu carries on
    t.wait_for("Error: the action failed")
    t.press("enter")
    t.press("c")
    assert t.wait_exit() == 0


def test_shell_suspends_and_redraws(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), term="vt100") as t:
        t.wait_for("> c Continue booting")
        t.press("s")
        t.wait_for("ibi maintenance shell")
        t.type("echo $((6*7))-from-shell\r")
        t.wait_for("42-from-shell")
        t.type("exit\r")
        t.wait_for("The image store cannot be used", "> c Continue booting")
        assert "42-from-shell" not in t.text
        t.press("c")
        assert t.wait_exit() == 0


def test_shell_asks_for_roots_password(tmp_path: Path) -> None:
    """Root of the system has a password: the Shell asks for it (masked), refuses a wrong
    one after a delay, opens on the right one, and does not ask again in the session."""
    from maintenance.auth import hash_root_password
    from tests.menu_fakes import shadow_line

    data = tmp_path / "data"
    data.mkdir()
    args = menu_args(data, tmp_path)
    (tmp_path / "system" / "etc" / "shadow").write_text(
        shadow_line(hash_root_password("letmein", "$y$")))
    with Tui(args, term="vt100") as t:
        t.wait_for("> c Continue booting")
        t.press("s")
        screen = t.wait_for("The Shell needs root's password.", "Password:", "Esc: cancel")
        t.type("wrong")
        assert "Password: *****" in t.text and "wrong" not in t.text
        t.press("enter")
        t.wait_for("Wrong password. Try again")
        assert "ibi maintenance shell" not in t.text
        t.type("letmein")
        t.press("enter")
        t.wait_for("ibi maintenance shell")
        t.type("exit\r")
        t.wait_for("> c Continue booting")
        t.press("s")  # authenticated for the rest of the session
        t.wait_for("ibi maintenance shell")
        t.type("exit\r")
        t.wait_for("> c Continue booting")
        t.press("c")
        assert t.wait_exit() == 0
    assert "letmein" not in screen


def test_zero_size_terminal_falls_back_to_80x24(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), winsize=(0, 0), term="linux") as t:
        t.wait_for("> c Continue booting", "?: help")
        assert "?: help" in t.screen.display[23]
        assert "ibi Maintenance Mode" in t.screen.display[0]
        t.press("c")
        assert t.wait_exit() == 0


def test_ctrl_c_is_harmless_and_help_opens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path), term="vt100", env={"NO_COLOR": "1"}) as t:
        t.wait_for("> c Continue booting")
        t.press("ctrl-c")
        assert t.child.isalive()
        t.press("?")
        t.wait_for("Keys", "Restore System: throw")
        t.press("esc")
        t.wait_for("no disk figures")  # the help is gone: the pane under it shows again
        assert "Keys" not in t.text
        t.press("ctrl-l")
        t.wait_for("> c Continue booting", "no disk figures")
        t.press("down", "down", "down", "up", "up", "up", "enter")
        assert t.wait_exit() == 0


def test_usage_error_without_terminal() -> None:
    import subprocess
    import sys

    from tests.menu_tui import REPO

    out = subprocess.run([sys.executable, "-m", "screens", "--data", "/nonexistent"],
                         cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert out.returncode == decision.EXIT_USAGE
    assert "needs a terminal" in out.stderr


def test_root_is_available_or_reason_is_printed() -> None:
    """Keeps the reason the root tests skip visible in -ra output even when only this file
    runs (require_root skips with it, or fails under IBI_REQUIRE_ALL=1)."""
    require_root()


def test_sigterm_ends_without_a_decision(tmp_path: Path) -> None:
    import signal

    data = tmp_path / "data"
    data.mkdir()
    with Tui(menu_args(data, tmp_path)) as t:
        t.wait_for("> c Continue booting")
        t.child.kill(signal.SIGTERM)
        assert t.wait_exit() == decision.EXIT_INTERRUPTED
    assert not (tmp_path / "decision").exists()
    assert "ended by signal 15" in (tmp_path / "menu.log").read_text()
