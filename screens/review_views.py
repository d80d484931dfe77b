"""The words of Live Review (``review NAME``, the menu's decision): the choice of the restore
point, and the page that says what booting it does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .views import Line, Page
from .widgets import ButtonRow

TITLE = "Live Review"
INTRO: list[Line | str] = [
    "Boot an older restore point to look at it, without changing anything.",
    "Choose the restore point (newest first):"]


def review_page(name: str, stack: Sequence[str], switch: str | None,
                on_boot: Callable[[], Any], on_restart: Callable[[], Any],
                on_back: Callable[[], Any]) -> Page:
    """What Live Review of ``name`` does, and the button that boots it: ``on_restart``
    when it runs another kernel (``switch``) than the one running now, else ``on_boot``."""
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
        button = ("Restart into Live Review", on_restart)
    else:
        button = ("Boot into Live Review", on_boot)
    return Page(f"Live Review of {name}", lines,
                [ButtonRow([button, ("Back", on_back)])], on_back)
