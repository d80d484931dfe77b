"""Built-in registry operators for the regional settings: timezone (/etc/localtime,
/etc/timezone) and locale (/etc/default/locale or /etc/locale.conf)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .opbase import RegistryOperator
from .optree import Invalid, Values, exists, one_line, read_text, resolve, write_file, write_symlink

ZONEINFO = "/usr/share/zoneinfo"
_ZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+.-]+)*$")


class Timezone(RegistryOperator):
    name = "timezone"
    paths = ("/etc/localtime", "/etc/timezone")
    optional = ("/etc/timezone",)
    fields: ClassVar[dict[str, str]] = {
        "zone": "a zone of /usr/share/zoneinfo (e.g. Europe/Berlin, Etc/UTC)"}
    required = ("zone",)

    def read(self, tree: Path) -> Values:
        link = tree / "etc/localtime"
        zone: str | None = None
        problem = None
        if link.is_symlink():
            target = os.readlink(link)
            if "zoneinfo/" in target:
                zone = target.split("zoneinfo/", 1)[1].strip("/")
                if not self._installed(tree, zone):
                    zone, problem = None, f"unparsable: /etc/localtime points to {target}, " \
                                          "which is not installed"
            else:
                problem = f"unparsable: /etc/localtime points to {target}, not to a zone"
        elif link.exists():
            problem = "unparsable: /etc/localtime is a copy, not a link to a zone"
        if zone is None:  # the older file, if it names a zone (localtime broken or absent)
            text = read_text(tree, "/etc/timezone")
            named = (text or "").strip()
            if named and _ZONE.fullmatch(named) and self._installed(tree, named):
                zone = named
            elif problem is None:
                problem = "deleted" if text is None and not os.path.lexists(link) else \
                    "empty" if not named else f"unparsable: /etc/timezone names {named!r}"
        if zone is None:
            raise Invalid(problem or "deleted")
        values = {"zone": zone}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        return values

    @staticmethod
    def _installed(tree: Path, zone: str) -> bool:
        if not (tree / ZONEINFO.lstrip("/")).is_dir():
            return True  # a tree without the zone database: nothing to check against
        p = resolve(tree, f"{ZONEINFO}/{zone}")
        return p is not None and p.is_file()

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        zone = values["zone"]
        if not _ZONE.fullmatch(zone) or ".." in zone.split("/"):
            raise Invalid(f"timezone.zone {zone!r} is not a zone name (e.g. Europe/Berlin)")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        zone = values["zone"]
        if not self._installed(tree, zone):
            raise Invalid(f"zone {zone} is not in this system's {ZONEINFO}")
        written = []
        link = tree / "etc/localtime"
        current = os.readlink(link) if link.is_symlink() else ""
        if current.split("zoneinfo/", 1)[-1] != zone or "zoneinfo/" not in current:
            # the link's style stays: timedatectl writes ../usr/share/zoneinfo/X
            rel = current.startswith("../") or current.startswith("usr/")
            target = f"..{ZONEINFO}/{zone}" if rel else f"{ZONEINFO}/{zone}"
            if write_symlink(tree, "/etc/localtime", target):
                written.append("/etc/localtime")
        if (tree / "etc/timezone").is_file() and \
                write_file(tree, "/etc/timezone", zone + "\n"):  # only where it still is
            written.append("/etc/timezone")
        return written

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/localtime": f"-> {ZONEINFO}/{values['zone']}",
                "/etc/timezone": values["zone"]}


LOCALE_VARS = ("LANG", "LANGUAGE", "LC_CTYPE", "LC_NUMERIC", "LC_TIME", "LC_COLLATE",
               "LC_MONETARY", "LC_MESSAGES", "LC_PAPER", "LC_NAME", "LC_ADDRESS",
               "LC_TELEPHONE", "LC_MEASUREMENT", "LC_IDENTIFICATION", "LC_ALL")
_LOCALE_VALUE = re.compile(r"^[A-Za-z0-9_.@:-]+$")


class Locale(RegistryOperator):
    name = "locale"
    paths = ("/etc/default/locale", "/etc/locale.conf")
    optional = paths
    fields: ClassVar[dict[str, str]] = {
        v: ("the system's language and formats (e.g. en_US.UTF-8, C.UTF-8)"
            if v == "LANG" else f"optional: {v} (e.g. de_DE.UTF-8)")
        for v in LOCALE_VARS}

    def read(self, tree: Path) -> Values:
        found = [p for p in self.paths if exists(tree, p)]
        if not found:
            raise Invalid("deleted")
        values: Values = {}
        for p in found:  # the first that holds settings (one may link to the other)
            text = read_text(tree, p)
            if text is None:
                continue
            for n, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                key, eq, value = line.partition("=")
                value = value.strip().strip("\"'")
                if not eq or key.strip() not in LOCALE_VARS or not _LOCALE_VALUE.fullmatch(value):
                    raise Invalid(f"unparsable: {p} line {n}: {one_line(line, 40)!r}")
                values[key.strip()] = value
            if values:
                return values
        raise Invalid("empty")

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        if not values:
            raise Invalid("locale: no variable set (e.g. locale.LANG=C.UTF-8)")
        for k, v in values.items():
            if not _LOCALE_VALUE.fullmatch(v):
                raise Invalid(f"locale.{k} {v!r}: letters, digits and _ . @ : - only")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):  # update-locale's header and quotes stay
            return []
        text = "".join(f"{k}={values[k]}\n" for k in LOCALE_VARS if k in values)
        written: list[str] = []
        seen: list[str] = []
        for p in self.paths:  # each file the system has (through a link: its target)
            if not exists(tree, p):
                continue
            real = resolve(tree, p)
            if real is None or not str(real).startswith(str(tree)):
                continue
            rel = "/" + os.path.relpath(real, tree)
            if rel in seen:
                continue
            seen.append(rel)
            if write_file(tree, rel, text):
                written.append(rel)
        if not seen:
            p = self.paths[0] if (tree / "etc/default").is_dir() else self.paths[1]
            write_file(tree, p, text)
            written.append(p)
        return written

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        line = " ".join(f"{k}={values[k]}" for k in LOCALE_VARS if k in values)
        return {p: line for p in self.paths}
