"""The menu's command line (``ibi-menu``), kept apart from urwid: ``--help`` and a usage
error need no urwid (the package build runs ``ibi-menu --help`` for its man page)."""

from __future__ import annotations

import argparse
import os

DEFAULT_DATA = "/run/ibi/data"
DEFAULT_RUN = "/run/ibi"
DEFAULT_DECISION = "/run/ibi/decision"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="ibi-menu", description="The maintenance menu (also: ibi menu): look at the "
        "image stack, restore, make restore points, roll back, review, verify, or continue "
        "booting.",
        epilog="exit status: 0 continue booting (decision 'normal'); 10 Live Review "
        "(decision 'review NAME'); 11 'reboot'; 12 'poweroff'; 1 failed, no decision; "
        "2 bad usage; 130 interrupted. See docs/FORMAT.md, \"The maintenance menu's decision\".")
    p.add_argument("--data", metavar="DIR", default=os.environ.get("IBI_DATA", DEFAULT_DATA),
                   help=f"the data partition's mount point (default: $IBI_DATA or {DEFAULT_DATA})")
    p.add_argument("--run-dir", metavar="DIR", default=os.environ.get("IBI_RUN", DEFAULT_RUN),
                   help=f"where stacks are staged (default: $IBI_RUN or {DEFAULT_RUN})")
    p.add_argument("--decision", metavar="FILE", default=DEFAULT_DECISION,
                   help=f"where the menu writes its decision (default: {DEFAULT_DECISION})")
    p.add_argument("--no-colour", "--no-color", dest="no_colour", action="store_true",
                   help="no colour (also when $NO_COLOR is set or TERM is vt100)")
    p.add_argument("--root", metavar="DIR", default="/",
                   help="the system whose /etc/shadow holds root's password when the writable "
                   "layer has none: the Shell and the actions that change the store ask for "
                   "it (or for the maintenance password, ibi passwd) (default: /)")
    p.add_argument("--boot-error", metavar="TEXT",
                   default=os.environ.get("IBI_BOOT_ERROR") or None,
                   help="why the boot fell back to the menu, shown at the top "
                   "(default: $IBI_BOOT_ERROR)")
    p.add_argument("--log", metavar="FILE", default=None,
                   help="log here (default: RUN_DIR/menu.log when writable, else nowhere)")
    p.add_argument("--debug", action="store_true", help="log at debug level")
    return p.parse_args(argv)
