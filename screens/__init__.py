"""The maintenance menu (urwid): one controller per screen (``main``, ``restore``, ...),
each next to the views that hold its words (``main_views``, ``restore_views``, ...; the
generic pages in ``views``); ``controller`` routes the menu's choices to them, and only
they talk to the engine; the urwid main loop and the command line are ``app``."""

import sys

# urwid's event_loop package imports every optional loop library it can find (trio, gi,
# tornado, twisted, zmq: 50–120 ms of the menu's start where they are installed, as gi is
# on most desktops). The menu runs urwid's own select loop; the entry points hide those
# libraries from this process before urwid is imported, unless something already loaded
# them. (Not at import of this package: a test process may want trio.)
OPTIONAL_LOOPS = ("trio", "gi", "tornado", "twisted", "zmq")


def lean_urwid() -> None:
    """Keep urwid from importing the event loop libraries the menu does not use."""
    if "urwid" in sys.modules:
        return
    for mod in OPTIONAL_LOOPS:
        sys.modules.setdefault(mod, None)  # type: ignore[arg-type] # None: ImportError


def run_menu() -> int:
    """The ``ibi-menu`` command (and ``python3 -m screens``): the menu, urwid kept lean."""
    from .args import parse_args

    argv = sys.argv[1:]
    parse_args(argv)  # --help and usage errors before urwid is needed
    lean_urwid()
    try:
        from .app import main
    except ImportError as e:
        print(f"ibi-menu: the menu cannot be loaded: {e}", file=sys.stderr)
        print("ibi-menu: hint: install urwid (apt-get install python3-urwid)", file=sys.stderr)
        return 1
    return main(argv)
