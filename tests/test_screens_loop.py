"""The real App and urwid main loop on a pseudo-terminal, with an engine whose work blocks
until the test lets it go: the screen must keep answering keys (help opens, the clock
moves) while the work runs in its thread, and progress must arrive through the pipe."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from maintenance.model import Kind, Progress
from screens.app import App, ConsoleScreen
from screens.controller import Controller
from tests.menu_fakes import FakeEngine, password_system

pyte = pytest.importorskip("pyte", reason="needs pyte (pip install pyte)")


class SlowEngine(FakeEngine):
    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.reported = threading.Event()

    def create(self, kind: Kind, *, progress: Any = None, **kw: Any) -> Any:
        if progress:
            progress(Progress("squashing", 40, 100, "slow.sqfs"))
        self.reported.set()
        assert self.release.wait(20), "the test never released the work"
        return super().create(kind, progress=progress, **kw)


class Terminal:
    """The far side of a pty: keys in, the screen (pyte) out, read by a thread."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.screen = pyte.Screen(80, 24)
        self.stream = pyte.ByteStream(self.screen)
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.stream.feed(data)

    def text(self) -> str:
        with self.lock:
            return "\n".join(self.screen.display)

    def wait_for(self, *needles: str, timeout: float = 10) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.05)
        raise AssertionError(f"waited for {needles!r}; the screen shows:\n{self.text()}")

    def send(self, keys: str, pause: float = 0.3) -> None:
        os.write(self.master, keys.encode())
        time.sleep(pause)


def pty_app() -> tuple[App, Terminal, int, int]:
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    tin = os.fdopen(os.dup(slave), "rb", buffering=0)
    tout = os.fdopen(os.dup(slave), "w")
    return App("/d", screen=ConsoleScreen(input=tin, output=tout)), Terminal(master), \
        master, slave


def run_driven(app: App, ctl: Controller, drive: Callable[[], None], master: int,
               slave: int) -> int:
    """Run the menu's loop while ``drive`` types at it from a thread; close the pty."""
    log_fd = os.open(os.devnull, os.O_WRONLY)
    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        return app.run(ctl, log_fd)
    finally:
        driver.join(10)
        os.close(log_fd)
        for fd in (slave, master):
            os.close(fd)


def test_work_runs_off_the_loop_and_the_screen_stays_responsive(tmp_path: Path) -> None:
    app, term, master, slave = pty_app()
    eng = SlowEngine()
    ctl = Controller(app, eng, decision_path=str(tmp_path / "decision"),  # type: ignore[arg-type]
                     auth=password_system(tmp_path))
    ctl.start()
    result: dict[str, int] = {}

    def drive() -> None:
        try:
            term.wait_for("> c Continue booting")
            term.send("i")
            term.wait_for("Create Incremental Restore Point")
            term.send("slow one\r")
            assert eng.reported.wait(10)
            screen = term.wait_for("Creating an incremental restore point", "40 %")
            assert "squashing slow.sqfs" in screen
            clock = [ln for ln in screen.splitlines() if "elapsed" in ln]
            term.send("?")  # the loop answers while the work is blocked in its thread
            term.wait_for("Keys", "Restore System: throw")
            term.send("\x1b", pause=0.5)
            time.sleep(1.2)
            later = [ln for ln in term.text().splitlines() if "elapsed" in ln]
            assert later and later != clock, "the clock must keep moving"
            eng.release.set()
            term.wait_for("Restore point created", "point2")
            term.send("\r")
            term.wait_for("> c Continue booting", "point2")
            term.send("c")
        except BaseException as e:  # surface it in the main thread
            result["error"] = 1
            result["msg"] = str(e)  # type: ignore[assignment]
            eng.release.set()
            os.write(master, b"c")

    code = run_driven(app, ctl, drive, master, slave)
    assert "error" not in result, result.get("msg")
    assert code == 0
    assert (tmp_path / "decision").read_text() == "normal\n"
    assert eng.metas["point2"].description == "slow one"


class BuggyEngine(FakeEngine):
    def verify(self, **_kw: Any) -> Any:
        return None  # the controller's result page then fails on the UI loop


def test_a_bug_in_a_callback_is_a_dialog_and_the_menu_carries_on(tmp_path: Path) -> None:
    app, term, master, slave = pty_app()
    ctl = Controller(app, BuggyEngine(), decision_path=str(tmp_path / "decision"),  # type: ignore[arg-type]
                     auth=password_system(tmp_path))
    ctl.start()
    seen: dict[str, str] = {}

    def drive() -> None:
        try:
            term.wait_for("> c Continue booting")
            term.send("v")
            seen["screen"] = term.wait_for("internal error: AttributeError")
            term.send("\r")
            term.wait_for("> c Continue booting")
            term.send("c")
        except BaseException as e:
            seen["error"] = str(e)
            os.write(master, b"\r")
            os.write(master, b"c")

    code = run_driven(app, ctl, drive, master, slave)
    assert "error" not in seen, seen["error"]
    assert "Traceback" not in seen["screen"]
    assert code == 0
