"""``python -m screens``: the maintenance menu."""

import sys

from .app import main

sys.exit(main())
