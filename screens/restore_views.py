"""The words of Restore System (``ibi restore`` in the menu): its confirmation (what is
discarded, what is kept, the saved settings written) and its result. What is discarded is
said the same way by Roll back (``rollback_views``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import urwid

from maintenance.model import Change, LayerStats, RestoreResult, StatePlan

from .state_views import StateTable, restored_lines
from .views import ConfirmView, Line, Page, result_page
from .widgets import human, plural

TITLE = "Restore System"
WORD = "RESTORE"
WORKING = "Restoring the system"
CHANGES_SHOWN = 200  # paths listed on a confirmation page


def arrow(stack: Sequence[str] | None) -> str:
    return " -> ".join(stack) if stack else "(roottab unreadable)"


def confirm_view(stats: LayerStats, state: StatePlan | str, changes: Sequence[Change],
                 tab: list[str] | None, on_confirm: Callable[[tuple[str, ...]], Any],
                 on_cancel: Callable[[], Any]) -> ConfirmView:
    """What Restore System throws away and keeps; ``on_confirm`` gets the ticked "keep
    current" choices."""
    table = StateTable(state)
    lines: list[Line | str | urwid.Widget] = [
        "Restore System throws away every change made to the system since the last",
        "restore point, and starts again from a fresh, empty writable layer.", ""]
    lines += discard_lines(stats)
    lines += ["", ("title", "Kept:"),
              "  /home: every user's files (they live outside the images)",
              "  the image stack: " + arrow(tab),
              "  every image in the store", ""]
    lines += table.lines
    lines += changed_lines(changes)
    return ConfirmView(TITLE, lines, WORD, lambda: on_confirm(table.chosen()), on_cancel)


def done_page(res: RestoreResult, on_ok: Callable[[], Any]) -> Page:
    """What Restore System did."""
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
    return result_page("System restored", lines, on_ok)


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
