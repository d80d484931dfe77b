"""State operators: the owner's configuration, captured while the system is good and
rendered into the fresh writable layer by Restore System and Roll back.

Each managed path has exactly one operator (declared in ``DATA/state/state.yaml``):

- **registry**: typed values parsed from a few files (maintenance/operators.py) and
  rendered back in the layout of the system they are written into;
- **stash**: files and directories kept byte for byte (content, mode, owner, xattrs; the
  links inside a directory as links);
- **reference**: always the image's version (also inside a stashed directory).

A *capture* (``DATA/state/captures/<id>/``: capture.yaml, and stash/ holding the stashed
entries at their paths) is made when the system is known to be good: at install, when a
restore point is made, on ``ibi state save``, and after a boot that reached
multi-user.target (ibi-state-save.service). A value the system holds no more (a file
deleted, empty or unparsable) is never captured: the capture keeps the one before. A
capture is written under ``DATA/state/.tmp-<id>``, fsynced and renamed into place, so a
power cut leaves the old set of captures or the new one; the newest ``keep`` are kept.
Restore never reads the layer it discards, except for the paths the owner chose to keep.
The format is documented in docs/FORMAT.md, "State".

The modules: stateconf.py (the declarations), statestash.py (stashed entries),
statecaps.py (reading captures), statesave.py (writing them), staterender.py (Restore's
plan, and applying a capture); the registry operators are in operators.py. What other
modules use is importable from here.
"""

from __future__ import annotations

from .statecaps import SEQ_DIGITS, Capture, _load, captures, info, latest, values
from .stateconf import (
    DEFAULT_CONFIG,
    DEFAULT_KEEP,
    FORMAT,
    GLOB_CHARS,
    KINDS,
    NOT_SYSTEM,
    Config,
    _check_path,
    default_text,
    ensure_config,
    load_config,
    parse_config,
)
from .staterender import apply, check_choices, plan
from .statesave import _write, capture, set_values
from .statestash import expand, sync_entry

__all__ = [  # what other modules import from here (all of it moved out in the split)
    "DEFAULT_CONFIG", "DEFAULT_KEEP", "FORMAT", "GLOB_CHARS", "KINDS", "NOT_SYSTEM",
    "SEQ_DIGITS", "Capture", "Config", "_check_path", "_load", "_write", "apply", "capture",
    "captures", "check_choices", "default_text", "ensure_config", "expand", "info", "latest",
    "load_config", "parse_config", "plan", "set_values", "sync_entry", "values",
]
