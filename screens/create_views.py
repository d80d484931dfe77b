"""The words of Create Full / Incremental Restore Point (``ibi create`` in the menu): the
form that says what it squashes, the progress, and the result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maintenance.model import ImageMeta, Kind, LayerStats

from .views import CreateView, Line, Page, result_page
from .widgets import date, human, plural

TITLES = {Kind.FULL: "Create Full Restore Point",
          Kind.INCREMENTAL: "Create Incremental Restore Point"}
NOTE = "Squashing with mksquashfs, then checking the image."


def create_form(kind: Kind, lay: LayerStats | None, on_create: Callable[[str, str], Any],
                on_cancel: Callable[[], Any]) -> CreateView:
    """What a restore point of ``kind`` squashes, with ``lay`` the writable layer's figures
    (None: unknown), and its name and description."""
    layer = (f"{plural(lay.changed, 'changed file')}, "
             f"{plural(lay.deleted, 'deleted path')}, {human(lay.bytes)}"
             if lay else "unknown")
    if kind is Kind.INCREMENTAL:
        lines: list[Line | str] = [
            "Squashes only the writable layer into a new image on top of the stack.",
            f"The writable layer holds: {layer}.",
            "Afterwards the new image is the top of the stack and the writable layer",
            "is empty. Small and quick; it needs every image below it."]
    else:
        lines = ["Squashes the whole system (every image of the stack plus the writable",
                 "layer) into one new image that becomes the whole stack. It stands on",
                 "its own; older images stay in the store. Slower and larger.",
                 f"The writable layer holds: {layer}."]
    lines += ["/home is never part of an image.", ""]
    return CreateView(TITLES[kind], lines, on_create, on_cancel)


def working(kind: Kind) -> str:
    what = "a full" if kind is Kind.FULL else "an incremental"
    return f"Creating {what} restore point"


def done_page(kind: Kind, meta: ImageMeta, on_ok: Callable[[], Any]) -> Page:
    """What Create did."""
    lines: list[Line | str] = [
        f"Created {meta.kind.value} restore point {meta.name} "
        f"({human(meta.size)}, {date(meta.created)}).",
        "It is now the top of the stack; the writable layer is empty."
        if kind is Kind.INCREMENTAL else
        "It is now the whole stack (older images stay in the store); the writable "
        "layer is empty."]
    if meta.stack and kind is Kind.INCREMENTAL:
        lines.append("Stack: " + " -> ".join((*meta.stack, meta.name)))
    return result_page("Restore point created", lines, on_ok)
