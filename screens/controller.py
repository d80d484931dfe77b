"""The one controller: the only code in ``screens`` that touches the Engine.

It turns a menu choice into engine calls and hands plain data to views. Every engine call
runs through ``host.run_background`` (a worker thread, off the UI loop) so the screen stays
responsive; errors come back as a one-line dialog and the menu carries on.

The host (``screens.app.App``, or a synchronous double in the tests) owns urwid: it shows
views, stacks them for Esc, runs work in the background, runs the shell and ends the loop.

The Shell and every action that changes the store first ask for root's password (or the
maintenance password), once per menu session, when there is one (``maintenance.auth``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import urwid

from maintenance.auth import Auth
from maintenance.compact import CompactPlan
from maintenance.engine import Engine
from maintenance.errors import IbiError, InUse, UsageError
from maintenance.model import (
    CaptureInfo,
    Change,
    ImageMeta,
    Kind,
    LayerStats,
    Progress,
    ProgressFn,
    RegistryValue,
    StatePlan,
    Status,
    Trial,
    UndoResult,
)

from . import compact_views, decision, undo_views
from .auth_views import PasswordDialog
from .main_views import ALL_ACTIONS, RESCUE_ACTIONS, DetailsView, HelpView, MainView
from .state_views import StateTable, StateView, restored_lines, saved_lines
from .undo_views import UndoPlan
from .views import (
    ConfirmView,
    CreateView,
    Dialog,
    Line,
    Page,
    PickerView,
    ProgressView,
    image_choice,
    result_page,
)
from .widgets import ButtonRow, date, human, plural

log = logging.getLogger(__name__)

CHANGES_SHOWN = 200  # paths listed on a confirmation page
DETAILS_SHOWN = 1000

Work = Callable[[ProgressFn], Any]
# what Restore System would do: the layer's figures, the managed state (or why it cannot be
# read), the first changed paths, the stack
RestorePlan = tuple[LayerStats, StatePlan | str, list[Change], list[str] | None]
# the store's status (or why it cannot be read), and whether Undo has a layer to put back
Loaded = tuple[Status | None, str | None, bool]
# what Compact would do, and the store's images (for the choice of where it starts)
CompactShown = tuple[CompactPlan, dict[str, ImageMeta]]
# what Undo would do: its plan, the current layer's figures, the stack, the trial it is on
UndoShown = tuple[UndoPlan, LayerStats | None, list[str] | None, Trial | None]
Done = Callable[[Any, BaseException | None], None]
OnProgress = Callable[[Progress | None, float], None]


class Host(Protocol):
    def show(self, view: urwid.Widget) -> None: ...  # push a view (Esc pops it)
    def home(self, view: urwid.Widget) -> None: ...  # drop every view, show this one
    def back(self) -> None: ...  # pop the top view (never the last)
    def dialog(self, widget: urwid.Widget) -> None: ...  # over the current view
    def close_dialog(self) -> None: ...
    def run_background(self, work: Work, on_progress: OnProgress, on_done: Done) -> None: ...
    def run_shell(self) -> str: ...  # returns a line saying how the shell ended
    def exit(self, code: int) -> None: ...


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

    # ------------------------------------------------------------------ plumbing
    def start(self) -> None:
        """Read the store once (before the screen is up) and show the main view."""
        self._show_main(self._load(lambda _p: None))

    def _load(self, _report: ProgressFn) -> Loaded:
        try:
            status = self.engine.status()
        except IbiError as e:
            log.warning("status: %s", e)
            return None, str(e) + (f" ({e.hint})" if e.hint else ""), False
        except OSError as e:  # an unreadable disk: the menu still opens, to rescue it
            log.warning("status: %s", e, exc_info=e)
            return None, f"cannot read the store: {e}", False
        except Exception as e:  # a store broken in a way the engine did not foresee
            log.error("status failed", exc_info=e)
            return None, f"cannot read the store: {type(e).__name__}: {e}", False
        try:
            can_undo = self.engine.undo_plan() is not None
        except Exception as e:  # Undo stays offered: trying it says what is wrong
            log.warning("undo plan: %s", e)
            can_undo = True
        return status, None, can_undo

    def _show_main(self, loaded: Loaded) -> None:
        self.status, self.problem, self.can_undo = loaded
        actions = ALL_ACTIONS if self.status is not None else RESCUE_ACTIONS
        low = self.status is not None and any(
            n.message.startswith("low space") for n in self.status.notices)
        self.host.home(MainView(self, self.status, problem=self.problem, actions=actions,
                                low_space=low, boot_error=self.boot_error,
                                disabled=() if self.can_undo else ("undo",)))

    def reload(self, then: Callable[[], None] | None = None) -> None:
        """Read the store again (in the background) and go back to a fresh main view."""
        def done(loaded: Loaded) -> None:
            self._show_main(loaded)
            if then is not None:
                then()
        self._work("Reading the store", "", self._load, done)

    def _work(self, title: str, note: str, work: Work, on_done: Callable[[Any], None],
              *, mutating: bool = False,
              on_error: Callable[[BaseException], None] | None = None) -> None:
        """Run ``work`` off the UI loop behind a progress view; hand its result to
        ``on_done`` or show its error. After a failed ``mutating`` action the store is read
        again before the error is shown (the action may have got part of the way)."""
        if self.busy:
            return
        view = ProgressView(title, note)
        self.busy = True
        self.host.show(view)

        def done(result: Any, exc: BaseException | None) -> None:
            self.busy = False
            self.host.back()
            show = on_error or self.error
            if exc is None:
                on_done(result)
            elif mutating:
                self.reload(then=lambda: show(exc))
            else:
                show(exc)

        self.host.run_background(work, view.update, done)

    def error(self, exc: BaseException,
              more: Sequence[tuple[str, Callable[[], Any]]] = ()) -> None:
        """Show an error as a one-line dialog; the menu carries on."""
        if isinstance(exc, IbiError):
            lines: list[Line | str] = [str(exc)]
            if exc.hint:
                lines.append(("dim", exc.hint))
            log.warning("action failed: %s", exc)
        elif isinstance(exc, OSError):
            lines = [str(exc)]
            log.warning("action failed: %s", exc, exc_info=exc)
        else:
            lines = [f"internal error: {type(exc).__name__}: {exc}",
                     ("dim", "the details are in the menu's log")]
            log.error("internal error", exc_info=exc)
        self.host.dialog(Dialog("the action failed", lines, self.host.close_dialog,
                                error=True, more=more))

    def _or_queue(self, action: str, name: str | None = None, description: str = "",
                  keep: Sequence[str] = (), said: Sequence[Line | str] = ()
                  ) -> Callable[[BaseException], None]:
        """An error handler for Restore, Roll back, Undo and Create: when the writable
        layer is in use (the menu runs in a booted system, not in Maintenance Mode), offer
        to queue the action for the next boot instead (``.root_images/pending``, run before
        the root is built), with the same "keep current" choices. ``said``: what the page
        after says (else: the next boot runs ``action``)."""
        def handler(exc: BaseException) -> None:
            if not isinstance(exc, InUse):
                self.error(exc)
                return

            def queue() -> None:
                self.host.close_dialog()
                self._authorized("Queueing for the next boot", lambda: self._work(
                    "Queueing for the next boot", "",
                    lambda _r: self.engine.queue(action, name=name or None,
                                                 description=description, keep=tuple(keep)),
                    lambda _res: self.host.show(result_page(
                        "Queued for the next boot",
                        said or [f"The next boot runs {action} before it builds the root.",
                                 "Cancel it with: ibi pending --cancel"], self.reload))))
            self.error(exc, more=[("Queue for the next boot", queue)])
        return handler

    def back(self) -> None:
        if not self.busy:
            self.host.back()

    def _authorized(self, what: str, then: Callable[[], None]) -> None:
        """Run ``then`` (the Shell, or an action that changes the store) once the session
        may: at once when a password was typed already or none is needed, else after the
        password dialog. A password that cannot be told is an error: the action stays
        locked (fail closed), the rest of the menu carries on."""
        if self.authenticated:
            then()
            return
        if self.busy:
            return
        try:
            guard = self.auth.required()
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
                    self.authenticated = True
                    self.host.close_dialog()
                    then()
            self.host.run_background(lambda _r: self.auth.check(guard, password),
                                     lambda _p, _t: None, done)
        dialog = PasswordDialog(what, guard.kind, str(guard.source), submit,
                                self.host.close_dialog)
        self.host.dialog(dialog)

    def help(self) -> None:
        if self.help_open:
            return
        self.help_open = True

        def close() -> None:
            self.help_open = False
            self.host.close_dialog()
        self.host.dialog(HelpView(close))

    # ------------------------------------------------------------------ ending the menu
    def continue_boot(self) -> None:
        self._decide(decision.NORMAL, None, decision.EXIT_NORMAL)

    def reboot(self) -> None:
        self._decide(decision.REBOOT, None, decision.EXIT_REBOOT)

    def poweroff(self) -> None:
        self._decide(decision.POWEROFF, None, decision.EXIT_POWEROFF)

    def _decide(self, what: str, name: str | None, code: int) -> None:
        try:
            line = decision.write_decision(self.decision_path, what, name)
        except OSError as e:
            self.error(OSError(f"cannot write the decision file {self.decision_path}: "
                               f"{e.strerror or e}"))
            return
        log.info("decision: %s (exit %d)", line, code)
        self.host.exit(code)

    # ------------------------------------------------------------------ Restore System
    def restore(self) -> None:
        self._authorized("Restore System", self._restore)

    def _restore(self) -> None:
        def work(_r: ProgressFn) -> RestorePlan:
            stats = self.engine.restore_plan()
            return (stats, self._state_plan(None), self.engine.changes(limit=CHANGES_SHOWN),
                    self._stack_or_none())
        self._work("Reading the writable layer", "", work, self._confirm_restore)

    def _stack_or_none(self) -> list[str] | None:
        try:
            return self.engine.roottab()
        except IbiError:
            return None

    def _state_plan(self, name: str | None) -> StatePlan | str:
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

    def _confirm_restore(self, plan: RestorePlan) -> None:
        stats, state, changes, tab = plan
        table = StateTable(state)
        lines: list[Line | str | urwid.Widget] = [
            "Restore System throws away every change made to the system since the last",
            "restore point, and starts again from a fresh, empty writable layer.", ""]
        lines += discard_lines(stats)
        lines += ["", ("title", "Kept:"),
                  "  /home: every user's files (they live outside the images)",
                  "  the image stack: " + (" -> ".join(tab) if tab else "(roottab unreadable)"),
                  "  every image in the store", ""]
        lines += table.lines
        lines += changed_lines(changes)
        self.host.show(ConfirmView("Restore System", lines, "RESTORE",
                                   lambda: self._do_restore(table.chosen(), stats),
                                   self.back))

    def _do_restore(self, keep: tuple[str, ...], shown: LayerStats | None = None) -> None:
        """``shown``: the figures the confirmation showed, reported as discarded (the
        engine then counts nothing before its commit)."""
        self.host.back()  # the confirmation

        def done(res: Any) -> None:
            lines: list[Line | str] = [
                f"Discarded: {plural(res.discarded.changed, 'changed file')}, "
                f"{plural(res.discarded.deleted, 'deleted path')}, "
                f"{human(res.discarded.bytes)}.",
                f"The old layer was set aside in {res.trash} (Undo puts it back; ibi purge "
                "deletes it).",
                *restored_lines(res.written, res.kept_current, res.warnings),
                "", "The writable layer is now fresh"
                + (": it holds only the saved settings." if res.written or res.kept_current
                   else " and empty.")]
            self.host.show(result_page("System restored", lines, self.reload))
        self._work("Restoring the system", "",
                   lambda _r: self.engine.restore(keep_current=keep, discarded=shown), done,
                   mutating=True, on_error=self._or_queue("restore", keep=keep))

    # ------------------------------------------------------------------ Undo
    def undo(self) -> None:
        """Put back the layer the last Restore, Roll back, Switch or fallback set aside.
        When the last reading found none, say so at once (no password for nothing)."""
        if not self.can_undo:
            self._nothing_to_undo()
            return
        self._authorized(undo_views.TITLE, self._undo)

    def _trial_or_none(self) -> Trial | None:
        """The trial the active stack is on (after an action: done all the same when it
        cannot be read; the main screen says more)."""
        try:
            return self.engine.trial()
        except IbiError as e:
            log.warning("trial: %s", e)
            return None

    def _nothing_to_undo(self) -> None:
        self.host.dialog(Dialog(undo_views.TITLE, undo_views.NOTHING, self.host.close_dialog))

    def _undo(self) -> None:
        def work(_r: ProgressFn) -> UndoShown | None:
            plan = self.engine.undo_plan()
            if plan is None:
                return None
            try:
                now: LayerStats | None = self.engine.restore_plan()
            except (IbiError, OSError) as e:  # a missing layer: Undo may still help
                log.warning("layer: %s", e)
                now = None
            return plan, now, self._stack_or_none(), self._trial_or_none()

        def shown(res: UndoShown | None) -> None:
            if res is None:  # purged since the main screen was drawn
                self.can_undo = False
                self._nothing_to_undo()
                return
            self.host.show(ConfirmView(undo_views.TITLE, undo_views.confirm_lines(*res),
                                       undo_views.WORD, self._do_undo, self.back))
        self._work("Reading the set-aside layer", "", work, shown)

    def _do_undo(self) -> None:
        self.host.back()  # the confirmation

        def work(_r: ProgressFn) -> tuple[UndoResult, Trial | None]:
            return self.engine.undo(), self._trial_or_none()

        def done(res: tuple[UndoResult, Trial | None]) -> None:
            self.host.show(result_page("Undone", undo_views.done_lines(*res), self.reload))
        self._work("Putting back the set-aside layer", "", work, done, mutating=True,
                   on_error=self._or_queue("undo", said=undo_views.QUEUED))

    # ------------------------------------------------------------------ restore points
    def create_full(self) -> None:
        self._authorized("Create Full Restore Point", lambda: self._ask_create(Kind.FULL))

    def create_incremental(self) -> None:
        self._authorized("Create Incremental Restore Point",
                         lambda: self._ask_create(Kind.INCREMENTAL))

    def _ask_create(self, kind: Kind) -> None:
        lay = self.status.layer if self.status else None
        layer = (f"{plural(lay.changed, 'changed file')}, "
                 f"{plural(lay.deleted, 'deleted path')}, {human(lay.bytes)}"
                 if lay else "unknown")
        if kind is Kind.INCREMENTAL:
            title = "Create Incremental Restore Point"
            lines: list[Line | str] = [
                "Squashes only the writable layer into a new image on top of the stack.",
                f"The writable layer holds: {layer}.",
                "Afterwards the new image is the top of the stack and the writable layer",
                "is empty. Small and quick; it needs every image below it."]
        else:
            title = "Create Full Restore Point"
            lines = ["Squashes the whole system (every image of the stack plus the writable",
                     "layer) into one new image that becomes the whole stack. It stands on",
                     "its own; older images stay in the store. Slower and larger.",
                     f"The writable layer holds: {layer}."]
        lines += ["/home is never part of an image.", ""]
        self.host.show(CreateView(title, lines,
                                  lambda name, desc: self._do_create(kind, name, desc),
                                  self.back))

    def _do_create(self, kind: Kind, name: str, description: str) -> None:
        self.host.back()  # the form

        def work(report: ProgressFn) -> ImageMeta:
            meta = self.engine.create(kind, name=name or None, description=description,
                                      progress=report)
            self.engine.reclaim_later()  # the cleared layer's files
            return meta

        def done(meta: ImageMeta) -> None:
            lines: list[Line | str] = [
                f"Created {meta.kind.value} restore point {meta.name} "
                f"({human(meta.size)}, {date(meta.created)}).",
                "It is now the top of the stack; the writable layer is empty."
                if kind is Kind.INCREMENTAL else
                "It is now the whole stack (older images stay in the store); the writable "
                "layer is empty."]
            if meta.stack and kind is Kind.INCREMENTAL:
                lines.append("Stack: " + " -> ".join((*meta.stack, meta.name)))
            self.host.show(result_page("Restore point created", lines, self.reload))
        what = "a full" if kind is Kind.FULL else "an incremental"
        self._work(f"Creating {what} restore point",
                   "Squashing with mksquashfs, then checking the image.", work, done,
                   mutating=True, on_error=self._or_queue(
                       "full" if kind is Kind.FULL else "incremental", name, description))

    def verify(self) -> None:
        def done(report: Any) -> None:
            bad = [i for i in report.items if not i.ok]
            lines: list[Line | str] = [
                ("ok", f"  ok      {i.name}") if i.ok
                else ("error", f"  FAILED  {i.name}: {i.problem}") for i in report.items]
            title = ("All images are intact" if not bad
                     else f"{len(bad)} of {len(report.items)} images have problems")
            self.host.show(result_page(title, lines, self.back, danger=bool(bad)))
        self._work("Verifying images", "Reading every image and checking its SHA-256.",
                   lambda report: self.engine.verify(all_images=True, progress=report), done)

    # ------------------------------------------------------------------ pick an image
    def _choices(self, exclude: Callable[[ImageMeta, list[str]], bool]
                 ) -> Callable[[ProgressFn], tuple[list[tuple[str, str]], list[str] | None]]:
        def work(_r: ProgressFn) -> tuple[list[tuple[str, str]], list[str] | None]:
            metas = self.engine.images()
            tab = self._stack_or_none() or []
            users = {m.name: [u.name for u in metas
                              if u.kind is Kind.INCREMENTAL and m.name in u.stack]
                     for m in metas}
            out = []
            for m in reversed(metas):  # newest first
                if exclude(m, tab):
                    continue
                where = ("top of the stack" if tab and m.name == tab[-1] else
                         "in the stack" if m.name in tab else "not in the stack")
                if m.pinned:
                    where += ", pinned"
                out.append((m.name, image_choice(m, where, users[m.name])))
            return out, tab
        return work

    def live_review(self) -> None:
        def shown(res: tuple[list[tuple[str, str]], list[str] | None]) -> None:
            choices, _tab = res
            intro: list[Line | str] = [
                "Boot an older restore point to look at it, without changing anything.",
                "Choose the restore point (newest first):"]
            self.host.show(PickerView("Live Review", intro, choices, self._review_page,
                                      self.back))
        self._work("Reading the store", "", self._choices(lambda m, t: False), shown)

    def _review_page(self, name: str) -> None:
        def work(_r: ProgressFn) -> tuple[tuple[str, ...], str | None]:
            return self.engine.review_stack(name), self.engine.review_kernel_switch(name)

        def shown(res: tuple[tuple[str, ...], str | None]) -> None:
            stack, switch = res
            lines: list[Line | str] = [
                f"Live Review boots {name} as it was:",
                "  stack: " + " -> ".join(stack), "",
                "- The system is read-only past state: the images up to this point.",
                "- A fresh tmpfs (RAM) lies on top: you can change anything, and every",
                "  change outside /home is lost at the next reboot. Nothing is kept.",
                "- /home is your real /home: files you change there do change.",
                "- Your current system, its writable layer and the store stay as they are.",
                "  Reboot to come back to them.", ""]
            if switch:  # its modules are not those of the kernel running now
                lines += [("warning", f"{name} runs Linux {switch}, not the kernel running "
                                      "now: the machine restarts into it"),
                          "  (GRUB's entry 'ibi Live Review of ...', once).", ""]
                button = ("Restart into Live Review", lambda: self._restart_into(name))
            else:
                button = ("Boot into Live Review",
                          lambda: self._decide(decision.REVIEW, name, decision.EXIT_REVIEW))
            page = Page(f"Live Review of {name}", lines,
                        [ButtonRow([button, ("Back", self.back)])], self.back)
            self.host.show(page)
        self._work("Reading the store", "", work, shown)

    def _restart_into(self, name: str) -> None:
        try:
            self.engine.boot_once(f"ibi-review-{name}")
        except IbiError as e:
            self.error(e)
            return
        self._decide(decision.REBOOT, None, decision.EXIT_REBOOT)

    def rollback(self) -> None:
        self._authorized("Roll back", self._rollback)

    def _rollback(self) -> None:
        def shown(res: tuple[list[tuple[str, str]], list[str] | None]) -> None:
            choices, tab = res
            intro: list[Line | str] = [
                "Make the stack end at an older restore point (or a newer one set aside",
                "by an earlier roll back). The current stack is: "
                + (" -> ".join(tab) if tab else "(roottab unreadable)"),
                "Choose the restore point (newest first):"]
            self.host.show(PickerView("Roll back to...", intro, choices,
                                      self._confirm_rollback, self.back))
        self._work("Reading the store", "",
                   self._choices(lambda m, tab: bool(tab) and m.name == tab[-1]), shown)

    def _confirm_rollback(self, name: str) -> None:
        def work(_r: ProgressFn) -> Any:
            new = self.engine.review_stack(name)
            stats = self.engine.restore_plan()
            return (new, stats, self._state_plan(name),
                    self.engine.changes(limit=CHANGES_SHOWN), self._stack_or_none())

        def shown(res: Any) -> None:
            new, stats, state, changes, tab = res
            table = StateTable(state)
            above = [n for n in (tab or []) if n not in new]
            lines: list[Line | str | urwid.Widget] = [
                "The stack becomes: " + " -> ".join(new),
                "  (now: " + (" -> ".join(tab) if tab else "roottab unreadable") + ")", ""]
            lines += discard_lines(stats, why="its changes were made on the current stack")
            lines += ["", ("title", "Kept:"),
                      "  /home: every user's files",
                      "  every image in the store"
                      + (f", including {', '.join(above)} (roll forward to it again later)"
                         if above else ""), ""]
            lines += table.lines
            lines += changed_lines(changes)
            self.host.show(ConfirmView(f"Roll back to {name}", lines, "ROLLBACK",
                                       lambda: self._do_rollback(name, table.chosen()),
                                       self.back))
        self._work("Reading the store", "", work, shown)

    def _do_rollback(self, name: str, keep: tuple[str, ...]) -> None:
        self.host.back()  # confirmation
        self.host.back()  # picker

        def work(_r: ProgressFn) -> tuple[tuple[str, ...], Trial | None]:
            return self.engine.rollback(name, keep_current=keep), self._trial_or_none()

        def done(res: tuple[tuple[str, ...], Trial | None]) -> None:
            new, trial = res
            lines: list[Line | str] = [
                "The stack is now: " + " -> ".join(new),
                "The old writable layer was set aside (Undo puts it back; ibi purge "
                "deletes it)."]
            if trial is not None:
                lines.append(f"It is on trial: a boot of it must complete within "
                             f"{plural(trial.tries, 'boot')}, else the boot falls back to "
                             f"[{' '.join(trial.good)}].")
            lines.append("Continue booting to start the system from there.")
            self.host.show(result_page("Rolled back", lines, self.reload))
        self._work(f"Rolling back to {name}", "", work, done,
                   mutating=True, on_error=self._or_queue("rollback", name, keep=keep))

    def delete(self) -> None:
        self._authorized("Delete restore point", self._delete)

    def _delete(self) -> None:
        def shown(res: tuple[list[tuple[str, str]], list[str] | None]) -> None:
            choices, _tab = res
            if not choices:
                self.host.dialog(Dialog("Delete restore point", [
                    "No restore point can be deleted now: each is in the active stack,",
                    "the boot fallback (roottab.prev), the stack a trial falls back to,",
                    "pinned (ibi unpin), or needed by another image.",
                    "Roll back past one first."], self.host.close_dialog))
                return
            intro: list[Line | str] = [
                "Images in the active stack or the boot fallback, pinned ones, or ones",
                "needed by another image cannot be deleted; these can.",
                "Choose the restore point to delete (newest first):"]
            self.host.show(PickerView("Delete restore point", intro, choices,
                                      self._confirm_delete, self.back))
        self._work("Reading the store", "",
                   self._choices(lambda m, tab: m.name in tab
                                 or self.engine.delete_blocker(m.name) is not None), shown)

    def _confirm_delete(self, name: str) -> None:
        def work(_r: ProgressFn) -> ImageMeta:
            for m in self.engine.images():
                if m.name == name:
                    return m
            raise IbiError(f"no image named {name!r} in the store")

        def shown(m: ImageMeta) -> None:
            lines: list[Line | str] = [
                ("title", "Deleted for good:"),
                f"  {m.name}: {m.kind.value} image of {date(m.created)}, {human(m.size)}",
                f"  {m.description}" if m.description else "  (no description)",
                f"  This frees about {human(m.size)} on the data partition.", "",
                ("title", "Kept:"),
                "  the active stack and the writable layer, unchanged",
                "  /home, and every other image in the store"]
            self.host.show(ConfirmView(f"Delete restore point {name}", lines, "DELETE",
                                       lambda: self._do_delete(name, m.size), self.back))
        self._work("Reading the store", "", work, shown)

    def _do_delete(self, name: str, size: int) -> None:
        self.host.back()  # confirmation
        self.host.back()  # picker
        self._work(f"Deleting {name}", "", lambda _r: self.engine.delete(name),
                   lambda _res: self.host.show(result_page(
                       "Restore point deleted", [f"Deleted {name}; freed {human(size)}."],
                       self.reload)), mutating=True)

    # ------------------------------------------------------------------ Compact
    def compact(self) -> None:
        """Merge the incremental restore points at the top of the stack into one image.
        The plan is read first: when there is nothing to merge, that is said in a line (no
        password for nothing). Compaction leaves the writable layer alone, so it runs in a
        booted system too: nothing is queued."""
        self._read_compact(None)

    def _read_compact(self, first: str | None) -> None:
        def work(_r: ProgressFn) -> CompactShown:
            plan = self.engine.compact_plan(first)
            return plan, {m.name: m for m in self.engine.images()}

        def shown(res: CompactShown) -> None:
            self._authorized(compact_views.TITLE, lambda: self._ask_compact(*res))
        self._work("Reading the store", "", work, shown, on_error=self._nothing_to_compact)

    def _nothing_to_compact(self, exc: BaseException) -> None:
        if not isinstance(exc, UsageError):
            self.error(exc)
            return
        lines: list[Line | str] = [str(exc)]
        if exc.hint:
            lines.append(("dim", exc.hint))
        self.host.dialog(Dialog(compact_views.TITLE, lines, self.host.close_dialog))

    def _ask_compact(self, plan: CompactPlan, metas: dict[str, ImageMeta]) -> None:
        free = self.status.disk.free if self.status else None
        more = ([(compact_views.PICK, lambda: self._pick_start(plan, metas))]
                if len(compact_views.starts(plan)) > 1 else [])
        self.host.show(CreateView(compact_views.TITLE, compact_views.plan_lines(plan, free),
                                  lambda name, desc: self._do_compact(plan, name, desc),
                                  self.back, action=compact_views.ACTION, more=more))

    def _pick_start(self, plan: CompactPlan, metas: dict[str, ImageMeta]) -> None:
        def picked(name: str) -> None:
            self.host.back()  # the picker
            self.host.back()  # the plan it was chosen from
            self._read_compact(name)
        self.host.show(PickerView(compact_views.TITLE, compact_views.pick_intro(plan),
                                  compact_views.start_choices(plan, metas), picked,
                                  self.back))

    def _do_compact(self, plan: CompactPlan, name: str, description: str) -> None:
        self.host.back()  # the plan

        def work(report: ProgressFn) -> tuple[ImageMeta, Trial | None]:
            # the run as shown: a stack changed meanwhile is refused, not merged unseen
            meta = self.engine.compact(first=plan.run[0], last=plan.run[-1],
                                       name=name or None, description=description,
                                       progress=report)
            return meta, self._trial_or_none()

        def done(res: tuple[ImageMeta, Trial | None]) -> None:
            self.host.show(result_page("Restore points compacted",
                                       compact_views.done_lines(plan, *res), self.reload))
        self._work(f"Compacting {compact_views.run_text(plan)}", compact_views.NOTE, work,
                   done, mutating=True)

    # ------------------------------------------------------------------ saved settings
    def state(self) -> None:
        def work(_r: ProgressFn) -> tuple[tuple[RegistryValue, ...], tuple[CaptureInfo, ...],
                                         StatePlan]:
            return (self.engine.state_values(), self.engine.state_captures(),
                    self.engine.state_plan())

        def shown(res: tuple[tuple[RegistryValue, ...], tuple[CaptureInfo, ...],
                             StatePlan]) -> None:
            self.host.show(StateView(*res, on_save=self._save_state, on_back=self.back))
        self._work("Reading the saved settings", "", work, shown)

    def _save_state(self, values: dict[str, str | None]) -> None:
        """Make a new capture with the changed values. A refused value (UsageError) is a
        dialog over the settings, whose fields keep what was typed."""
        def done(info: CaptureInfo) -> None:
            self.host.back()  # the settings, with their old values
            self.host.show(result_page("Settings saved", saved_lines(info, values),
                                       self.reload))
        self._authorized("Saving the settings", lambda: self._work(
            "Saving the settings", "", lambda _r: self.engine.state_set(values), done))

    # ------------------------------------------------------------------ the rest
    def shell(self) -> None:
        self._authorized("The Shell", self._shell)

    def _shell(self) -> None:
        how = self.host.run_shell()
        log.info("shell: %s", how)
        self.reload()

    def details(self) -> None:
        notices = self.status.notices if self.status else ()
        self._work("Reading the writable layer", "",
                   lambda _r: self.engine.changes(limit=DETAILS_SHOWN),
                   lambda ch: self.host.show(DetailsView(notices, ch, DETAILS_SHOWN,
                                                         self.back)))


def discard_lines(stats: LayerStats, why: str = "set aside, deleted later by ibi purge"
                  ) -> list[Line | str]:
    """What Restore (or Roll back) discards: the writable layer, counted."""
    if stats.files == 0 and stats.deleted == 0:
        return [("title", "Discarded:"), "  nothing: the writable layer is empty."]
    return [
        ("title", f"Discarded: the writable layer ({why}):"),
        ("warning", f"  {plural(stats.changed, 'new or changed file')}, "
                    f"{plural(stats.deleted, 'deleted path')}, "
                    f"{plural(stats.opaque, 'replaced directory', 'replaced directories')}, "
                    f"{human(stats.bytes)}")]


def changed_lines(changes: Sequence[Change]) -> list[Line | str]:
    """The paths the writable layer changes, listed last: the list may be long."""
    if not changes:
        return []
    out: list[Line | str] = ["", ("title", "Discarded, path by path:")]
    out += [f"    {c.what:8} {c.path}" for c in changes]
    if len(changes) >= CHANGES_SHOWN:
        out.append(("dim", f"    ... only the first {CHANGES_SHOWN} paths are listed"))
    return out
