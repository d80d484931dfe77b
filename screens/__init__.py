"""The maintenance menu (urwid): views in ``views``, the one controller that talks to the
engine in ``controller``, the urwid main loop and the command line in ``app``."""
