"""Built-in registry operators that name the machine: hostname (/etc/hostname and the
127.0.1.1 line of /etc/hosts) and machine-id (/etc/machine-id)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from .opbase import RegistryOperator
from .optree import Invalid, Values, raw, read_text, write_file

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")  # hostname(5): dotted names too, <= 64
_FQDN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
LOOPBACK_NAME = "127.0.1.1"


class Hostname(RegistryOperator):
    name = "hostname"
    paths = ("/etc/hostname", "/etc/hosts")
    optional = ("/etc/hosts",)
    fields: ClassVar[dict[str, str]] = {
        "name": "the host name: letters, digits, '-' and '.', at most 64 (e.g. office-pc)",
              "fqdn": "optional: the full name on the 127.0.1.1 line of /etc/hosts "
                      "(e.g. office-pc.example.org)"}
    required = ("name",)

    def read(self, tree: Path) -> Values:
        text = read_text(tree, "/etc/hostname")
        if text is None:
            raise Invalid("deleted")
        lines = [ln.strip() for ln in text.splitlines()
                 if ln.strip() and not ln.lstrip().startswith("#")]
        if not lines:
            raise Invalid("empty")
        values = {"name": lines[0]}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        with contextlib.suppress(Invalid):
            for names in _loopback_names(read_text(tree, "/etc/hosts") or ""):
                if names and names[0].startswith(values["name"] + ".") \
                        and _FQDN.fullmatch(names[0]):
                    values["fqdn"] = names[0]
        return values

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        name = values["name"]
        if not _HOSTNAME.fullmatch(name) or len(name) > 64:
            raise Invalid(f"hostname.name {name!r}: letters, digits, '-' and '.' only, at "
                          "most 64, no label starting or ending with '-'")
        fqdn = values.get("fqdn")
        if fqdn and (not _FQDN.fullmatch(fqdn) or len(fqdn) > 253
                     or not fqdn.startswith(name + ".")):
            raise Invalid(f"hostname.fqdn {fqdn!r}: must be {name}.<domain>")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):
            return []
        changed = []
        if write_file(tree, "/etc/hostname", values["name"] + "\n"):
            changed.append("/etc/hostname")
        hosts = read_text(tree, "/etc/hosts")
        if hosts is not None and write_file(  # a system without the file: not made up
                tree, "/etc/hosts", _with_loopback(hosts, self._names(values))):
            changed.append("/etc/hosts")
        return changed

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/hostname": values["name"],
                "/etc/hosts": f"{LOOPBACK_NAME} {self._names(values)}"}

    def look(self, tree: Path, path: str) -> str:
        if path != "/etc/hosts":
            return raw(tree, path)
        try:
            lines = _loopback_names(read_text(tree, path) or "")
        except Invalid as e:
            return str(e)
        return f"{LOOPBACK_NAME} {' '.join(lines[0])}" if lines else raw(tree, path)

    @staticmethod
    def _names(values: Mapping[str, str]) -> str:
        fqdn = values.get("fqdn")
        return f"{fqdn} {values['name']}" if fqdn else values["name"]


def _loopback_names(hosts: str) -> list[list[str]]:
    out = []
    for line in hosts.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] == LOOPBACK_NAME:
            out.append(words[1:])
    return out


def _with_loopback(hosts: str, names: str) -> str:
    """``hosts`` with the host's names on its first 127.0.1.1 line (added after the
    127.0.0.1 line, or first, when it has none). The line's other names (aliases an owner
    added after the host's) and its comment stay, as does the rest of the file."""
    lines = hosts.splitlines()
    out: list[str] = []
    placed = False
    for line in lines:
        body, hash_, comment = line.partition("#")
        words = body.split()
        if words and words[0] == LOOPBACK_NAME and not placed:
            old = words[1:]
            # the host's own names were the first one or two (fqdn then name); the rest
            # are aliases
            n = 2 if len(old) >= 2 and old[0].startswith(old[1] + ".") else min(1, len(old))
            new = f"{LOOPBACK_NAME}\t{' '.join([names, *old[n:]])}"
            out.append(new + (f" {hash_}{comment}" if hash_ else ""))
            placed = True
            continue
        out.append(line)
    new = f"{LOOPBACK_NAME}\t{names}"
    if not placed:
        at = next((i + 1 for i, ln in enumerate(out) if ln.split()[:1] == ["127.0.0.1"]), 0)
        out.insert(at, new)
    return "\n".join(out) + "\n"


_MACHINE_ID = re.compile(r"^[0-9a-f]{32}$")


class MachineId(RegistryOperator):
    name = "machine-id"
    paths = ("/etc/machine-id",)
    fields: ClassVar[dict[str, str]] = {"id": "32 lowercase hex digits (systemd's machine ID)"}
    required = ("id",)

    def read(self, tree: Path) -> Values:
        text = read_text(tree, "/etc/machine-id")
        if text is None:
            raise Invalid("deleted")
        value = text.strip()
        if not value:
            raise Invalid("empty")
        values = {"id": value}
        try:
            self.check(values)
        except Invalid as e:
            raise Invalid(f"unparsable: {e}") from None
        return values

    def check(self, values: Mapping[str, str]) -> None:
        super().check(values)
        v = values["id"]
        if not _MACHINE_ID.fullmatch(v) or v == "0" * 32:
            raise Invalid(f"machine-id.id {v!r} is not 32 lowercase hex digits")

    def write(self, tree: Path, values: Mapping[str, str]) -> list[str]:
        self.check(values)
        if self.holds(tree, values):
            return []
        return ["/etc/machine-id"] if write_file(tree, "/etc/machine-id", values["id"] + "\n",
                                                 new_mode=0o444) else []

    def show(self, values: Mapping[str, str]) -> dict[str, str]:
        return {"/etc/machine-id": values["id"]}
