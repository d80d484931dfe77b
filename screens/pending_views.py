"""The words of queueing an action for the next boot (``ibi pending`` in the menu): what
Restore, Roll back, Undo and Create offer when the writable layer is in use."""

from __future__ import annotations

from collections.abc import Sequence

from .views import Line

QUEUE = "Queue for the next boot"  # the error dialog's button
QUEUEING = "Queueing for the next boot"  # what asks for the password, and works
QUEUED = "Queued for the next boot"  # the result page


def queued_lines(action: str, said: Sequence[Line | str] = ()) -> list[Line | str]:
    """What the result page says: ``said`` or, when nothing, that the next boot runs
    ``action``."""
    return list(said) or [f"The next boot runs {action} before it builds the root.",
                          "Cancel it with: ibi pending --cancel"]
