"""The menu's answer to the boot: a one-line decision file written atomically, and the exit
status that says the same. See docs/FORMAT.md ("The maintenance menu's decision")."""

from __future__ import annotations

import os
from pathlib import Path

EXIT_NORMAL = 0  # decision "normal": boot the active stack with its writable layer
EXIT_REVIEW = 10  # decision "review NAME": boot NAME's stack on a tmpfs upper
EXIT_REBOOT = 11  # decision "reboot"
EXIT_POWEROFF = 12  # decision "poweroff"
EXIT_ERROR = 1  # the menu could not run or could not write its decision: no decision file
EXIT_USAGE = 2  # bad command line
EXIT_INTERRUPTED = 130  # killed by a signal (SIGINT/SIGTERM): no decision file

NORMAL = "normal"
REVIEW = "review"
REBOOT = "reboot"
POWEROFF = "poweroff"
SIMPLE = (NORMAL, REBOOT, POWEROFF)


def write_decision(path: str | os.PathLike[str], decision: str, name: str | None = None) -> str:
    """Write ``normal``, ``review NAME``, ``reboot`` or ``poweroff`` (one line) to ``path``
    atomically: a temp file in the same directory, fsynced, renamed over ``path``, the
    directory fsynced. Return the line written. Raises OSError when it cannot be written."""
    if decision in SIMPLE and name is None:
        line = decision
    elif decision == REVIEW and name and name.strip() == name and " " not in name:
        line = f"{REVIEW} {name}"
    else:
        raise ValueError(f"bad decision: {decision!r} {name!r}")
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="ascii") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return line


def read_decision(path: str | os.PathLike[str]) -> tuple[str, str | None]:
    """Parse a decision file: ``("normal", None)``, ``("review", NAME)``, ``("reboot",
    None)`` or ``("poweroff", None)``."""
    words = Path(path).read_text(encoding="ascii").split()
    if len(words) == 1 and words[0] in SIMPLE:
        return words[0], None
    if len(words) == 2 and words[0] == REVIEW:
        return REVIEW, words[1]
    raise ValueError(f"bad decision file {path}: {' '.join(words)!r}")
