"""The words of Undo (``ibi restore --undo`` in the menu): its confirmation, its result, and
why there is nothing to undo. Like ``views``, these only lay out what ``undo.UndoController``
hands them (the engine's plan and result); the words are theirs."""

from __future__ import annotations

from collections.abc import Sequence

from maintenance.model import LayerStats, Trial, UndoResult

from .views import Line
from .widgets import human, plural

# Engine.undo_plan(): the trash entry put back, the stack it was used on, what it holds
UndoPlan = tuple[str, list[str], LayerStats]

TITLE = "Undo Restore / Roll back"
WORD = "UNDO"
READING = "Reading the set-aside layer"
WORKING = "Putting back the set-aside layer"
DONE = "Undone"
NOTHING: list[Line | str] = [
    "Nothing to undo: no writable layer was set aside (by Restore System,",
    "Roll back, Switch or an automatic fallback), or ibi purge deleted it."]
QUEUED: list[Line | str] = [
    "The next boot puts the set-aside writable layer back (Undo) before it",
    "builds the root.", "Cancel it with: ibi pending --cancel"]


def figures(stats: LayerStats | None) -> str:
    """What a writable layer holds, in one line."""
    if stats is None:
        return "(cannot be read)"
    if stats.files == 0 and stats.deleted == 0:
        return "empty"
    return (f"{plural(stats.changed, 'new or changed file')}, "
            f"{plural(stats.deleted, 'deleted path')}, {human(stats.bytes)}")


def arrow(stack: Sequence[str] | None) -> str:
    return " -> ".join(stack) if stack else "(roottab unreadable)"


def confirm_lines(plan: UndoPlan, now: LayerStats | None, tab: list[str] | None,
                  trial: Trial | None) -> list[Line | str]:
    """What Undo puts back, what becomes of the stack (and its trial: as
    ``Engine._arm_trial`` decides it), and what it sets aside in turn."""
    entry, stack, stats = plan
    lines: list[Line | str] = [
        "Undo puts back the writable layer that the last Restore System, Roll back,",
        "Switch or automatic fallback set aside, as it was, with the image stack it",
        "was used on. Nothing is written from the saved settings: it has its own.", "",
        ("title", f"Put back: the layer set aside in trash/{entry}:"),
        f"  {figures(stats)}"]
    if tab is None or list(stack) != list(tab):
        good = list(trial.good) if trial is not None else tab
        lines += [("warning", "The stack becomes: " + arrow(stack)),
                  "  (now: " + arrow(tab) + ")"]
        if good == list(stack):
            lines.append("  It is the last good stack: the trial of the current one ends.")
        else:
            lines += ["  Like a Switch, it is on trial (unless boot trials are off): if no",
                      "  boot of it completes, the boot falls back to "
                      + (f"[{' '.join(good)}]." if good else "the last good stack.")]
    else:
        lines.append("The stack stays: " + arrow(stack))
    lines += ["", ("title", "Set aside in turn: the current writable layer:"),
              ("warning", f"  {figures(now)}"),
              "  Undo again swaps it back; ibi purge deletes it.",
              "", ("title", "Kept:"),
              "  /home: every user's files",
              "  every image in the store"]
    return lines


def done_lines(res: UndoResult, trial: Trial | None) -> list[Line | str]:
    """What Undo did."""
    lines: list[Line | str] = [
        f"Put back: the writable layer from trash/{res.put_back} ({figures(res.layer)})."]
    if res.stack != res.previous:
        lines += ["The stack is now: " + arrow(res.stack),
                  "  (was: " + arrow(res.previous) + ")"]
        if trial is not None:
            lines.append(f"It is on trial: a boot of it must complete within "
                         f"{plural(trial.tries, 'boot')}, else the boot falls back to "
                         f"[{' '.join(trial.good)}].")
    else:
        lines.append("The stack is unchanged: " + arrow(res.stack))
    lines += [f"The layer it replaced was set aside in trash/{res.set_aside}:",
              "  Undo again swaps it back; ibi purge deletes it.", "",
              "Continue booting to start the system from there."]
    return lines
