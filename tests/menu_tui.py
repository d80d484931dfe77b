"""Drive the real menu (``python -m screens``) in a pseudo-terminal with pexpect and read its
screen through pyte, as a person at an 80x24 console would see it."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

KEYS = {"enter": "\r", "esc": "\x1b", "up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C",
        "left": "\x1b[D", "tab": "\t", "backspace": "\x7f", "pgdn": "\x1b[6~",
        "pgup": "\x1b[5~", "ctrl-c": "\x03", "ctrl-l": "\x0c"}


def missing_tools() -> str | None:
    """Why the TUI tests cannot run here, or None."""
    for mod in ("pexpect", "pyte"):
        try:
            __import__(mod)
        except ImportError:
            return f"needs {mod} (pip install pexpect pyte)"
    return None


class Tui:
    def __init__(self, args: list[str], *, cols: int = 80, rows: int = 24,
                 term: str = "linux", env: dict[str, str] | None = None,
                 winsize: tuple[int, int] | None = None,
                 command: tuple[str, ...] = ("-m", "screens")) -> None:
        import pexpect
        import pyte

        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.ByteStream(self.screen)
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": term,
                    "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8",
                    "PYTHONPATH": str(REPO), "SHELL": "/bin/sh", "PYTHONDONTWRITEBYTECODE": "1"}
        full_env.update(env or {})
        self.started = time.monotonic()
        self.child = pexpect.spawn(sys.executable, [*command, *args], cwd=str(REPO),
                                   env=full_env, dimensions=winsize or (rows, cols))
        self.exitstatus: int | None = None

    def pump(self, wait: float = 0.05) -> bool:
        """Read what the menu wrote so far into the pyte screen; False once it has exited."""
        import pexpect

        try:
            while True:
                data = self.child.read_nonblocking(65536, timeout=wait)
                self.stream.feed(data)
                wait = 0.02
        except pexpect.TIMEOUT:
            return True
        except pexpect.EOF:
            return False

    @property
    def text(self) -> str:
        return "\n".join(self.screen.display)

    def wait_for(self, *needles: str, timeout: float = 20.0) -> str:
        """Wait until every needle is on the screen (also when the screen wraps it over
        lines: a temporary path's length moves the line breaks); return the screen."""
        end = time.monotonic() + timeout
        while True:
            alive = self.pump()
            text = self.text
            flat = " ".join(text.split())
            if all(n in text or " ".join(n.split()) in flat for n in needles):
                return text
            if not alive or time.monotonic() > end:
                raise AssertionError(f"waited for {needles!r}; the screen shows:\n{text}")

    def press(self, *keys: str, pause: float = 0.15) -> None:
        for key in keys:
            self.child.send(KEYS.get(key, key))
            # urwid needs a moment to tell a lone Esc from the start of an escape sequence
            time.sleep(0.4 if key == "esc" else pause)
            self.pump(0.01)

    def type(self, text: str) -> None:
        self.child.send(text)
        time.sleep(0.2)
        self.pump(0.01)

    def wait_exit(self, timeout: float = 20.0) -> int:
        end = time.monotonic() + timeout
        while self.pump(0.1):
            if time.monotonic() > end:
                raise AssertionError(f"the menu did not exit; the screen shows:\n{self.text}")
        self.child.close()
        self.exitstatus = self.child.exitstatus
        assert self.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return self.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)

    def __enter__(self) -> Tui:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
