"""The words of the store's images: Delete restore point... (``ibi delete``: the choice,
why there is none, the confirmation, the result) and Verify images (``ibi verify --all``:
the report)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from maintenance.model import ImageMeta, VerifyReport

from .views import ConfirmView, Line, Page, result_page
from .widgets import date, human

DELETE = "Delete restore point"
NOTHING_TO_DELETE: list[Line | str] = [
    "No restore point can be deleted now: each is in the active stack,",
    "the boot fallback (roottab.prev), the stack a trial falls back to,",
    "pinned (ibi unpin), or needed by another image.",
    "Roll back past one first."]
DELETE_INTRO: list[Line | str] = [
    "Images in the active stack or the boot fallback, pinned ones, or ones",
    "needed by another image cannot be deleted; these can.",
    "Choose the restore point to delete (newest first):"]
VERIFYING = "Verifying images"
VERIFY_NOTE = "Reading every image and checking its SHA-256."


def delete_confirm(m: ImageMeta, on_confirm: Callable[[], Any],
                   on_cancel: Callable[[], Any]) -> ConfirmView:
    """What deleting ``m`` loses for good, and what it keeps."""
    lines: list[Line | str] = [
        ("title", "Deleted for good:"),
        f"  {m.name}: {m.kind.value} image of {date(m.created)}, {human(m.size)}",
        f"  {m.description}" if m.description else "  (no description)",
        f"  This frees about {human(m.size)} on the data partition.", "",
        ("title", "Kept:"),
        "  the active stack and the writable layer, unchanged",
        "  /home, and every other image in the store"]
    return ConfirmView(f"Delete restore point {m.name}", lines, "DELETE", on_confirm,
                       on_cancel)


def deleting(name: str) -> str:
    return f"Deleting {name}"


def deleted_page(name: str, size: int, on_ok: Callable[[], Any]) -> Page:
    return result_page("Restore point deleted", [f"Deleted {name}; freed {human(size)}."],
                       on_ok)


def verified_page(report: VerifyReport, on_ok: Callable[[], Any]) -> Page:
    """Each image, ok or what is wrong with it."""
    bad = [i for i in report.items if not i.ok]
    lines: list[Line | str] = [
        ("ok", f"  ok      {i.name}") if i.ok
        else ("error", f"  FAILED  {i.name}: {i.problem}") for i in report.items]
    title = ("All images are intact" if not bad
             else f"{len(bad)} of {len(report.items)} images have problems")
    return result_page(title, lines, on_ok, danger=bool(bad))
