"""The menu's words for the engine's notices (``Notice(level, code, data)``, which the
engine never words). The main screen says a stack on trial, the last automatic fallback
and a deep stack first, one short line each (they decide what the next boots do, or name
the key that helps); every other notice, there and on the Details page, in the words
``ibi status`` prints (maintenance/wording.py), so a notice reads the same in both faces.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from maintenance.model import Level, Notice, Status
from maintenance.wording import notice_text

from .widgets import date, plural

SHORT_CODES = ("trial", "fallback", "depth")  # said in short, first, on the main screen


class Said(NamedTuple):
    """One notice as the menu shows it."""

    level: Level
    text: str


def menu_text(n: Notice) -> str:
    """A notice's whole text (the main screen's list, the Details page)."""
    if n.code == "boot-failed":  # the menu's own: the boot that brought it up failed
        return f"the boot failed: {n.data['error']}"
    return notice_text(n)


def boot_failed(error: str) -> Notice:
    return Notice(Level.ERROR, "boot-failed", {"error": error})


def first_lines(status: Status, actions: Collection[str]) -> list[Said]:
    """A stack on trial, the last automatic fallback and a stack deeper than the policy's
    bound, one short line each (their whole text stays on the Details page)."""
    out = []
    t = status.trial
    if t is not None:
        left = t.tries - status.boots
        then = ("the next boot falls back" if left <= 0 else "falls back") + \
            f" to [{' '.join(t.good)}]"
        failed = t.failure if len(t.failure) <= 60 else t.failure[:57] + "..."
        out.append(Said(Level.WARNING if status.boots else Level.INFO,
                        f"On trial ({t.reason}): {status.boots} of "
                        f"{plural(t.tries, 'boot')} used; {then}"
                        + (f"; last failure: {failed}" if failed else "")))
    fb = status.fallback
    if fb is not None:
        out.append(Said(Level.WARNING,
                        f"Automatic fallback {date(fb.at)}: [{' '.join(fb.failed)}] failed "
                        f"{plural(fb.boots, 'boot')}; back on [{' '.join(fb.good)}]"))
    if any(n.code == "depth" for n in status.notices):
        hint = "k compacts it" if "compact" in actions else "ibi compact merges it"
        out.append(Said(Level.INFO, f"The stack is {len(status.stack)} images deep (past "
                                    f"the policy's bound): {hint}"))
    return out


def other_lines(status: Status, boot_error: str | None) -> list[Said]:
    """The rest of the notices, in their whole words (the boot's failure first)."""
    shown = (*([boot_failed(boot_error)] if boot_error else []), *status.notices)
    return [Said(n.level, menu_text(n)) for n in shown if n.code not in SHORT_CODES]
