"""The words of Compact restore points (``ibi compact`` in the menu): its plan, the choice of
the lowest restore point merged, and its result. Like ``views``, these only lay out what
``compact.CompactController`` hands them (the engine's plan and the new image); the words
are theirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import urwid

from maintenance.compact import CompactPlan
from maintenance.model import ImageMeta, Trial

from .views import Line, image_choice
from .widgets import human, label_value, plural

TITLE = "Compact restore points"
ACTION = "Compact"  # the button that goes ahead
PICK = "Start from..."  # the button that chooses the lowest restore point merged
NEW = "(the new image)"
DONE = "Restore points compacted"
NOTE = ("Squashing the merged restore points with mksquashfs, then checking the new image "
        "file by file against them.")


def arrow(names: Sequence[str]) -> str:
    return " -> ".join(names)


def working(plan: CompactPlan) -> str:
    return f"Compacting {run_text(plan)}"


def run_text(plan: CompactPlan) -> str:
    return f"{plan.run[0]}..{plan.run[-1]} ({plural(len(plan.run), 'restore point')})"


def starts(plan: CompactPlan) -> list[str]:
    """Where the run may start: every restore point above the bottom image that leaves at
    least two to merge (the run always ends at the top of the stack)."""
    return list(plan.stack[1:-1])


def short_arrow(names: Sequence[str], keep: int = 4) -> str:
    """A chain of images, its middle left out when it is long: ``a -> b -> (9 more) -> z``."""
    if len(names) <= keep:
        return arrow(names)
    return arrow((*names[:keep - 2], f"({len(names) - keep + 1} more)", names[-1]))


def plan_lines(plan: CompactPlan, free: int | None) -> list[Line | str | urwid.Widget]:
    """What Compact would do: the restore points merged, the stack before and after, the
    space, and what it keeps; then every restore point merged, by name."""
    short = free is not None and plan.run_bytes > free

    def row(label: str, value: str, attr: str | None = None) -> urwid.Widget:
        return label_value(f"  {label}", value, 13, attr)
    lines: list[Line | str | urwid.Widget] = [
        f"Merges {plural(len(plan.run), 'restore point')} at the top of the stack into one "
        f"new image: the stack goes from {len(plan.stack)} images to {plan.depth_after}, "
        "and the system stays the same (each restore point adds a layer to every file "
        "lookup).", "",
        row("merged:", f"{run_text(plan)}, {human(plan.run_bytes)}"),
        row("becomes:", short_arrow((*plan.below, NEW))),
        row("depth:", f"{len(plan.stack)} images now, {plan.depth_after} after"),
        row("space:", f"needs about {human(plan.run_bytes)} free"
            + (f" ({human(free)} free now)" if free is not None else ""),
            "warning" if short else None),
        row("kept:", "the merged restore points, in the store (Delete restore point or "
            "ibi prune removes them later); the writable layer, untouched; /home"), "",
        "The new image is checked file by file against the restore points it replaces "
        "before the stack changes."
        + (f" {PICK} chooses the lowest restore point to merge (now: {plan.run[0]})."
           if len(starts(plan)) > 1 else ""), "",
        ("title", "Merged, bottom first:"), "  " + arrow(plan.run)]
    return lines


def start_choices(plan: CompactPlan, metas: Mapping[str, ImageMeta]
                  ) -> list[tuple[str, str]]:
    """The picker's entries, newest first: each start, with what it merges."""
    out = []
    names = starts(plan)
    for i, name in reversed(list(enumerate(names, 1))):
        run = len(plan.stack) - i
        where = (f"merges {run}, {i + 1} images after"
                 + ("; chosen now" if name == plan.run[0] else ""))
        m = metas.get(name)
        out.append((name, image_choice(m, where, ()) if m is not None
                    else f"{name}\n  [{where}]"))
    return out


def pick_intro(plan: CompactPlan) -> list[Line | str]:
    return ["The restore point chosen and every one above it, up to the top of the stack, "
            "are merged into one image. The stack is: " + short_arrow(plan.stack, 6),
            "Choose the lowest restore point to merge (newest first):"]


def done_lines(plan: CompactPlan, meta: ImageMeta, trial: Trial | None) -> list[Line | str]:
    """What Compact did."""
    lines: list[Line | str] = [
        f"Merged {run_text(plan)} into {meta.name} ({human(meta.size)}).",
        "The stack is now: " + short_arrow((*plan.below, meta.name), 6),
        f"  ({plan.depth_after} images deep; it was {len(plan.stack)})"]
    if trial is not None:
        lines.append(f"It stays on trial, its boots counted as before: if no boot of it "
                     f"completes within {plural(trial.tries, 'boot')}, the boot falls back "
                     f"to [{' '.join(trial.good)}].")
    lines += ["The merged restore points stay in the store: the boot's fallback "
              "(roottab.prev) still names them; once no stack needs them, Delete restore "
              "point or ibi prune removes them.",
              "The writable layer is untouched."]
    return lines
