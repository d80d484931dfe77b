"""The registry operator's interface (:class:`RegistryOperator`), which the built-in
operators (opidentity.py, opregional.py) and the owner's plug-ins (operators.py) implement.
Plug-ins subclass it as ``maintenance.operators.RegistryOperator``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .optree import Invalid, Values, raw


class RegistryOperator:
    """Parses some files of a system into values and renders them back."""

    name: ClassVar[str]
    paths: ClassVar[tuple[str, ...]]  # the files it owns (absolute, as the system sees them)
    fields: ClassVar[dict[str, str]]  # field -> one-line help (syntax, example)
    required: ClassVar[tuple[str, ...]] = ()  # fields a valid set of values must have
    optional: ClassVar[tuple[str, ...]] = ()  # paths written only where the system has them

    def read(self, tree: Path) -> Values:
        """The values the tree's files hold; :class:`Invalid` if none."""
        raise NotImplementedError

    def check(self, values: Mapping[str, str]) -> None:
        """Raise :class:`Invalid` naming the field if a value is malformed."""
        for f in self.required:
            if not values.get(f):
                raise Invalid(f"{self.name}.{f} is required")
        for f in values:
            if f not in self.fields:
                raise Invalid(f"{self.name} has no field {f!r} "
                              f"(fields: {', '.join(self.fields)})")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        """Render ``values`` into the tree's files; return the paths changed. Files that
        already hold the values are left as they are (format, comments, link style)."""
        raise NotImplementedError

    def holds(self, tree: Path, values: Mapping[str, str]) -> bool:
        """Whether the tree's files already hold ``values``."""
        try:
            return self.read(tree) == dict(values)
        except Invalid:
            return False

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        """One line per owned path: what the values make of it."""
        raise NotImplementedError

    def look(self, tree: Path, path: str) -> str:
        """One line: what ``path`` holds now, when the files hold no valid value."""
        return raw(tree, path)
