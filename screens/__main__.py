"""``python -m screens``: the maintenance menu (what ``ibi-menu`` runs)."""

import sys

from . import run_menu

sys.exit(run_menu())
