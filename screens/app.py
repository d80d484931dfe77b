"""``ibi menu`` / ``python -m screens``: the urwid main loop, the terminal, and the command
line. The App is the controller's host: it shows views, runs work in a thread (progress
comes back through ``loop.watch_pipe``), hands the terminal to a shell, and ends the loop.

Nothing is printed while urwid owns the terminal: logging goes to a file (``--log``), and
file descriptor 2 points at that file (or /dev/null) while the screen is up, so a stray
warning cannot tear the screen.

Exit status: 0 continue booting (decision ``normal``); 10 Live Review (``review NAME``);
11 ``reboot``; 12 ``poweroff``; 1 the menu failed (no decision written); 2 bad usage;
130 interrupted. See docs/FORMAT.md ("The maintenance menu's decision").
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import urwid

from . import decision
from .args import DEFAULT_RUN, parse_args
from .base import Done, OnProgress, Work
from .controller import Controller
from .widgets import PALETTE

log = logging.getLogger(__name__)

# terminals that may have no colour: a serial console's vt220 (systemd's default TERM
# there) included; focus stays visible through the '>' marker and reverse video
MONO_TERMS = {"vt52", "vt100", "vt102", "vt220", "dumb"}
TICK = 0.25  # seconds between clock updates while work runs
WAKE_EVERY = 0.05  # at most this often a progress report wakes the UI loop


class ConsoleScreen(urwid.display.raw.Screen):
    """A raw screen that takes a 0x0 terminal (a serial console that reports no size) as
    80x24 instead of drawing nothing."""

    def get_cols_rows(self) -> tuple[int, int]:
        cols, rows = super().get_cols_rows()
        if cols <= 0 or rows <= 0:
            cols, rows = 80, 24
            self.maxrow = rows
        return cols, rows


class _Job:
    def __init__(self) -> None:
        self.latest: Any = None
        self.result: Any = None
        self.exc: BaseException | None = None
        self.done = False
        self.finished = False
        self.started = time.monotonic()


class App:
    """The urwid side: a frame (header, current view, help line) and a stack of views."""

    def __init__(self, data_dir: str, *, run_dir: str = DEFAULT_RUN, colour: bool = True,
                 screen: urwid.display.raw.Screen | None = None) -> None:
        self.data_dir = data_dir
        self.run_dir = run_dir
        self.views: list[urwid.Widget] = []
        self.dialog_widget: urwid.Widget | None = None
        self.exit_code = decision.EXIT_ERROR
        self.controller: Controller | None = None
        head = urwid.Columns([urwid.Text(" ibi Maintenance Mode"),
                              urwid.Text(f"data: {data_dir} ", align="right", wrap="clip")])
        self.footer = urwid.Text("")
        self.frame: urwid.Frame[urwid.Widget, Any, Any] = urwid.Frame(
            urwid.SolidFill(" "), header=urwid.AttrMap(head, "header"),
            footer=urwid.AttrMap(self.footer, "footer"))
        self.screen = screen if screen is not None else ConsoleScreen()
        if not colour:
            self.screen.set_terminal_properties(colors=1)
        self.loop = urwid.MainLoop(self.frame, PALETTE, screen=self.screen,
                                   unhandled_input=self._unhandled, handle_mouse=False)

    # ------------------------------------------------------------------ Host
    def show(self, view: urwid.Widget) -> None:
        self.views.append(view)
        self._redraw()

    def home(self, view: urwid.Widget) -> None:
        self.views = [view]
        self.dialog_widget = None
        self._redraw()

    def back(self) -> None:
        if len(self.views) > 1:
            self.views.pop()
            self._redraw()

    def dialog(self, widget: urwid.Widget) -> None:
        self.dialog_widget = widget
        self._redraw()

    def close_dialog(self) -> None:
        self.dialog_widget = None
        self._redraw()

    def _redraw(self) -> None:
        view = self.views[-1] if self.views else urwid.SolidFill(" ")
        body: urwid.Widget = view
        footer = getattr(view, "footer", "")
        if self.dialog_widget is not None:
            body = urwid.Overlay(self.dialog_widget, view, "center",
                                 getattr(self.dialog_widget, "width", 60), "middle", "pack")
            footer = getattr(self.dialog_widget, "footer", footer)
        self.frame.body = body
        self.footer.set_text(footer)

    def run_background(self, work: Work, on_progress: OnProgress, on_done: Done) -> None:
        """Run ``work(report)`` in a thread. ``report`` may be called from that thread as
        often as it likes: the latest report reaches ``on_progress`` on the UI loop (woken
        through a pipe; a full pipe drops wake-ups, never blocks the worker), and a clock
        tick keeps the view moving. ``on_done(result, exc)`` runs once, on the UI loop."""
        job = _Job()
        wfd = self.loop.watch_pipe(lambda data: self._wake(job, data, on_progress, on_done))
        fcntl.fcntl(wfd, fcntl.F_SETFL, fcntl.fcntl(wfd, fcntl.F_GETFL) | os.O_NONBLOCK)

        last = [0.0]

        def report(p: Any) -> None:
            job.latest = p
            now = time.monotonic()
            if now - last[0] < WAKE_EVERY:
                return  # the UI takes the latest report at its next wake-up or tick
            last[0] = now
            with contextlib.suppress(OSError):  # full pipe or closed reader: skip a wake-up
                os.write(wfd, b"p")

        def target() -> None:
            try:
                job.result = work(report)
            except BaseException as e:  # handed to the UI loop, shown as a dialog
                job.exc = e
            job.done = True
            with contextlib.suppress(OSError):
                os.write(wfd, b"d")
            os.close(wfd)  # the reader sees EOF even if the pipe was full

        def tick(_loop: Any = None, _data: Any = None) -> None:
            if not job.finished:
                on_progress(job.latest, time.monotonic() - job.started)
                self.loop.set_alarm_in(TICK, tick)

        tick()
        threading.Thread(target=target, name="ibi-work", daemon=True).start()

    def _wake(self, job: _Job, data: bytes, on_progress: OnProgress, on_done: Done
              ) -> bool | None:
        if job.finished:
            return False
        on_progress(job.latest, time.monotonic() - job.started)
        if job.done or not data:
            job.finished = True
            on_done(job.result, job.exc)
            return False
        return None

    def run_shell(self) -> str:
        """Stop the screen, run $SHELL (or /bin/sh) on the terminal, start it again."""
        shell = os.environ.get("SHELL") or "/bin/sh"
        if not os.access(shell, os.X_OK):
            shell = "/bin/sh"
        env = dict(os.environ, IBI_MENU="1", IBI_DATA=self.data_dir, IBI_RUN=self.run_dir)
        self.screen.stop()
        try:
            with self._stderr_restored():
                sys.stdout.write(f"\nibi maintenance shell ({shell}). Type 'exit' to return to the "
                                 "menu.\n\n")
                sys.stdout.flush()
                try:
                    rc = subprocess.call([shell], env=env, preexec_fn=_child_signals)
                    how = f"{shell} exited with status {rc}"
                except OSError as e:
                    how = f"cannot run {shell}: {e}"
                    sys.stdout.write(how + "\n")
        finally:
            # an interactive shell took the terminal's foreground; take it back (SIGTTOU is
            # ignored, see run(), so this works from the background group too)
            with contextlib.suppress(OSError):
                os.tcsetpgrp(sys.stdin.fileno(), os.getpgrp())
            self.screen.start()
            self._grab_signal_keys()
            self.screen.clear()
        return how

    def exit(self, code: int) -> None:
        self.exit_code = code
        raise urwid.ExitMainLoop()

    # ------------------------------------------------------------------ loop
    def _unhandled(self, key: Any) -> None:
        if not isinstance(key, str) or self.controller is None:
            return
        if key == "?":
            self.controller.help()
        elif key == "ctrl l":
            self.screen.clear()
        elif key == "esc":
            if self.dialog_widget is not None:
                self.close_dialog()
            else:
                self.controller.back()

    def _grab_signal_keys(self) -> None:
        # Ctrl-C / Ctrl-\ / Ctrl-Z are keys here, not signals: a boot menu must not be
        # killed or stopped by a stray keypress (the shell gets them back).
        with contextlib.suppress(Exception):
            self.screen.tty_signal_keys(intr="undefined", quit="undefined", susp="undefined")

    @contextlib.contextmanager
    def _stderr_restored(self) -> Iterator[None]:
        saved = getattr(self, "_saved_stderr", None)
        if saved is None:
            yield
            return
        quiet = os.dup(2)
        os.dup2(saved, 2)
        try:
            yield
        finally:
            os.dup2(quiet, 2)
            os.close(quiet)

    def run(self, controller: Controller, log_fd: int) -> int:
        """Run the loop until the controller ends it. An unexpected exception in a callback
        is logged and shown as a dialog; the loop starts again."""
        self.controller = controller
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        # killed (SIGTERM) or the line hung up (SIGHUP): unwind, so the terminal is restored
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGHUP, _interrupt)
        self._saved_stderr: int | None = os.dup(2)
        os.dup2(log_fd, 2)
        failures: list[float] = []
        try:
            while True:
                self.screen.start()
                self._grab_signal_keys()
                try:
                    self.loop.run()
                    return self.exit_code
                except Exception as e:
                    log.error("internal error in the menu", exc_info=e)
                    now = time.monotonic()
                    failures = [t for t in failures if now - t < 10] + [now]
                    if len(failures) >= 5:  # failing over and over: give the boot back
                        raise
                    controller.error(e)
                finally:
                    self.screen.stop()
        finally:
            os.dup2(self._saved_stderr, 2)
            os.close(self._saved_stderr)
            self._saved_stderr = None


def _interrupt(signum: int, _frame: Any) -> None:
    log.warning("ended by signal %d", signum)
    raise KeyboardInterrupt


def _child_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN,
                signal.SIGPIPE, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def _open_log(args: argparse.Namespace) -> int:
    """Send logging to a file (never the terminal); return an fd for stderr to point at."""
    path = args.log or os.path.join(args.run_dir, "menu.log")
    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.DEBUG if args.debug else logging.INFO)
    logging.captureWarnings(True)
    try:
        if args.log is None:
            os.makedirs(args.run_dir, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        return os.open(path, os.O_WRONLY | os.O_APPEND)
    except OSError:
        root.addHandler(logging.NullHandler())
        return os.open(os.devnull, os.O_WRONLY)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("ibi menu: needs a terminal on stdin and stdout", file=sys.stderr)
        return decision.EXIT_USAGE
    log_fd = _open_log(args)
    colour = not (args.no_colour or os.environ.get("NO_COLOR")
                  or os.environ.get("TERM", "") in MONO_TERMS)
    log.info("menu starting: data=%s run=%s decision=%s colour=%s TERM=%s", args.data,
             args.run_dir, args.decision, colour, os.environ.get("TERM"))
    try:
        app = App(args.data, run_dir=args.run_dir, colour=colour)
        controller = Controller(app, data_dir=args.data, run_dir=args.run_dir,
                                decision_path=args.decision, boot_error=args.boot_error,
                                auth_root=args.root)
        controller.start()
        code = app.run(controller, log_fd)
    except KeyboardInterrupt:
        return decision.EXIT_INTERRUPTED
    except Exception as e:
        log.error("the menu failed", exc_info=e)
        print(f"ibi menu: {type(e).__name__}: {e}", file=sys.stderr)
        return decision.EXIT_ERROR
    finally:
        os.close(log_fd)
    log.info("menu done: exit %d", code)
    return code
