"""Registry operators: typed values parsed from a system's files and rendered back.

A registry operator owns a few files of a system tree (``paths``). ``read(tree)`` parses
them into values (``{field: text}``) or raises :class:`Invalid` when they hold none (a file
deleted, empty or unparsable); ``write(tree, values)`` renders the values into another
tree, in the layout *that* tree uses (a newer base without /etc/timezone gets only
/etc/localtime). Because values, not bytes, are kept, the file is always well formed.

An owner adds one by subclassing :class:`RegistryOperator` in an installed Python package
and naming the class in the entry point group ``ibi.state_operators`` (docs/FORMAT.md,
"State"). Trees are directories (a mounted system), never the running root's paths:
every read resolves symlinks inside the tree, and every write refuses a parent directory
that is a symlink, so nothing outside the tree is read or written.

This module is the registry of operators: the built-in ones and those installed packages
add, listed once per process. The rest lives beside it, and is importable from here too:
optree.py (tree access, :class:`Invalid`), opbase.py (:class:`RegistryOperator`), and
the built-in operators, opidentity.py (hostname, machine-id) and opregional.py
(timezone, locale).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from .errors import StoreError
from .opbase import RegistryOperator
from .opidentity import LOOPBACK_NAME, Hostname, MachineId
from .opregional import LOCALE_VARS, ZONEINFO, Locale, Timezone
from .optree import (
    MAX_FILE,
    MAX_LINKS,
    Invalid,
    Values,
    exists,
    one_line,
    raw,
    read_text,
    real_parent,
    resolve,
    write_file,
    write_symlink,
)

__all__ = [  # what plug-ins and other modules import from here (most moved out in the split)
    "BUILTIN", "ENTRY_POINTS", "LOCALE_VARS", "LOOPBACK_NAME", "MAX_FILE", "MAX_LINKS",
    "ZONEINFO", "Hostname", "Invalid", "Locale", "MachineId", "RegistryOperator", "Timezone",
    "Values", "available", "exists", "found", "one_line", "raw", "read_text", "real_parent",
    "resolve", "write_file", "write_symlink",
]

BUILTIN: dict[str, type[RegistryOperator]] = {
    op.name: op for op in (Hostname, Timezone, MachineId, Locale)}
ENTRY_POINTS = "ibi.state_operators"


_FOUND: tuple[object, dict[str, type[RegistryOperator]]] | None = None


def available() -> dict[str, type[RegistryOperator]]:
    """The built-in registry operators and those installed packages add (entry points of
    the group ``ibi.state_operators``: name = module:Class). Listed once per process:
    listing entry points reads every installed distribution's metadata (tens of ms)."""
    global _FOUND
    from importlib import metadata  # here: importing it costs more than most of ibi

    if _FOUND is None or _FOUND[0] is not metadata.entry_points:
        _FOUND = (metadata.entry_points, _discover(metadata.entry_points))
    return dict(_FOUND[1])


def found() -> object:
    """A token that changes when the set of operators does (for caches of what uses it)."""
    available()
    return _FOUND


def _discover(entry_points: Callable[..., Iterable[Any]]) -> dict[str, type[RegistryOperator]]:
    ops = dict(BUILTIN)
    for ep in entry_points(group=ENTRY_POINTS):
        if ep.name in ops:
            continue  # a built-in name is not replaced
        try:
            cls = ep.load()
        except Exception as e:  # a broken plug-in: named, not a traceback
            raise StoreError(f"state operator {ep.name!r} ({ep.value}) cannot be loaded: "
                             f"{e}") from None
        if not (isinstance(cls, type) and issubclass(cls, RegistryOperator)):
            raise StoreError(f"state operator {ep.name!r} ({ep.value}) is not a "
                             "RegistryOperator")
        ops[ep.name] = cls
    return ops
