"""The words for the engine's notices: ``ibi status`` prints them, ``--json`` adds them as
``message``, and the menu's Details page shows them (its main screen says a few in short:
screens/notice_words.py).

The engine reports a notice as data, ``Notice(level, code, data)`` (maintenance/status.py);
this module alone turns it into a sentence. Each code's words use only that notice's data,
so a script or another face can word it too (the codes: docs/ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .model import Fallback, Notice
from .status import human

Data = Mapping[str, Any]


def _stack(names: Any) -> str:
    return "[" + " ".join(names) + "]"


def fallback_text(fb: Fallback) -> str:
    """One line for ``ibi status`` and ``ibi boot-fallback``: what the automatic fallback
    did."""
    at = fb.at.strftime("%Y-%m-%d %H:%M UTC")
    return (f"automatic fallback: stack {_stack(fb.failed)} failed {fb.boots} boots "
            f"({fb.why}); back on {_stack(fb.good)} at {at} (ibi restore --undo "
            "returns to it with its layer)")


def _ram(d: Data) -> str:
    what = f"the RAM overlay {d['mountpoint']}" + (f" (upper of {d['serves']})"
                                                  if d.get("serves") else "")
    frac = d["used"] / d["total"] if d["total"] else 0.0
    return f"{what} is {frac:.0%} full ({human(d['used'])} of {human(d['total'])})"


def _trial(d: Data) -> str:
    then = "the next boot falls back" if d["boots"] >= d["tries"] else \
        "when no boot completes"
    return (f"the stack is on trial ({d['reason']}): {d['boots']} of {d['tries']} boots "
            f"used; {then} to {_stack(d['good'])}"
            + (f"; last failure: {d['failure']}" if d.get("failure") else ""))


def _queued(d: Data) -> str:
    return f"queued for the next boot: {d['action']}" + (f" ({d['name']})" if "name" in d
                                                        else "")


def _fallback(d: Data) -> str:
    at = d["at"]
    return fallback_text(Fallback(tuple(d["failed"]), tuple(d["good"]), d["boots"],
                                  at if isinstance(at, datetime)
                                  else datetime.fromisoformat(at), d.get("why", "")))


WORDS: dict[str, Callable[[Data], str]] = {
    "roottab-unusable": lambda d: d["error"],
    "roottab-prev": lambda d: f"roottab.prev names: {' '.join(d['stack'])}",
    "image-problem": lambda d: f"{d['image']}: {d['problem']}",
    "home-in-layer": lambda d: (
        f"the writable layer holds {d['entries']} entries under /home (written while /home "
        "was not bound): the next restore point moves them to /home/ibi-rescued-*"),
    "layer-missing": lambda d: ("the writable layer is missing (it is recreated empty on "
                                "the next mount)"),
    "low-space": lambda d: (f"low space on the data partition: {human(d['free'])} free of "
                            f"{human(d['total'])}"),
    "ram-critical": lambda d: (f"{_ram(d)}: writes fail when it is full; keep what matters "
                               "in /home"),
    "ram-full": _ram,
    "trash": lambda d: f"{human(d['bytes'])} of set-aside layers await deletion (ibi purge)",
    "queued": _queued,
    "queued-unusable": lambda d: f"{d['error']} (ibi pending --cancel)",
    "interrupted": lambda d: (f"interrupted action: {d['step']} (done by the next action, "
                              "or: ibi recover)"),
    "no-kernel": lambda d: ("no image of the stack names a kernel: GRUB boots the one ibi "
                            "install set up"),
    "trial": _trial,
    "trial-void": lambda d: ("a trial of another stack is on record (void; ibi boot-ok "
                             "--cancel removes it)"),
    "trial-unusable": lambda d: f"{d['error']} (ibi boot-ok --cancel)",
    "fallback": _fallback,
    "policy-unusable": lambda d: f"{d['error']}: the defaults apply",
    "depth": lambda d: (f"the stack is {d['depth']} images deep (the policy's bound is "
                        f"{d['bound']}): each adds a layer to every file lookup; ibi "
                        "compact merges its restore points into one"),
}


def notice_text(n: Notice) -> str:
    """``n`` in words (one line). A code this version does not know is shown as it is."""
    words = WORDS.get(n.code)
    if words is None:
        return f"{n.code}: {dict(n.data)}" if n.data else n.code
    return words(n.data)
