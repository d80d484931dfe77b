"""ibi's engine: the image store, stack assembly and every maintenance action.

The engine never imports urwid. Both the ``ibi`` command line and the maintenance menu
drive it through :class:`maintenance.engine.Engine`; it returns frozen dataclasses from
:mod:`maintenance.model` and raises :class:`maintenance.errors.IbiError` subclasses whose
``str()`` is a one-line message fit for a user.
"""

__version__ = "0.1.0"
