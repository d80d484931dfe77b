"""``python -m screens``: the maintenance menu."""

import sys

from . import lean_urwid

lean_urwid()

from .app import main  # noqa: E402 - after lean_urwid

sys.exit(main())
