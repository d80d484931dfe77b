"""The words of Roll back to... (``ibi rollback`` in the menu): the choice of the restore
point, the confirmation (the new stack, what is discarded and kept, the saved settings
written) and the result."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import urwid

from maintenance.model import Change, LayerStats, StatePlan, Trial

from .restore_views import arrow, changed_lines, discard_lines
from .state_views import StateTable
from .views import ConfirmView, Line, Page, result_page
from .widgets import plural

TITLE = "Roll back"  # what asks for the password
PICK = "Roll back to..."
WORD = "ROLLBACK"


def pick_intro(tab: Sequence[str] | None) -> list[Line | str]:
    return ["Make the stack end at an older restore point (or a newer one set aside",
            "by an earlier roll back). The current stack is: " + arrow(tab),
            "Choose the restore point (newest first):"]


def confirm_view(name: str, new: Sequence[str], stats: LayerStats, state: StatePlan | str,
                 changes: Sequence[Change], tab: list[str] | None,
                 on_confirm: Callable[[tuple[str, ...]], Any],
                 on_cancel: Callable[[], Any]) -> ConfirmView:
    """What rolling back to ``name`` makes of the stack, throws away and keeps;
    ``on_confirm`` gets the ticked "keep current" choices."""
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
    return ConfirmView(f"Roll back to {name}", lines, WORD,
                       lambda: on_confirm(table.chosen()), on_cancel)


def working(name: str) -> str:
    return f"Rolling back to {name}"


def done_page(new: Sequence[str], trial: Trial | None, on_ok: Callable[[], Any]) -> Page:
    """What Roll back did."""
    lines: list[Line | str] = [
        "The stack is now: " + " -> ".join(new),
        "The old writable layer was set aside (Undo puts it back; ibi purge "
        "deletes it)."]
    if trial is not None:
        lines.append(f"It is on trial: a boot of it must complete within "
                     f"{plural(trial.tries, 'boot')}, else the boot falls back to "
                     f"[{' '.join(trial.good)}].")
    lines.append("Continue booting to start the system from there.")
    return result_page("Rolled back", lines, on_ok)
