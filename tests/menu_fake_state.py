"""The managed state of tests/menu_fakes.FakeEngine: the managed paths and the registry of the
fake, and its captures, stashed files and the files as the system holds them now."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from datetime import timedelta

from maintenance.errors import UsageError
from maintenance.model import (
    CaptureInfo,
    LayerStats,
    RegistryValue,
    RestoreResult,
    StateItem,
    StatePlan,
)
from tests.menu_doubles import T0

# the managed paths of the fake: (path, operator, registry key; "" for stash and reference)
MANAGED: tuple[tuple[str, str, str], ...] = (
    ("/etc/hostname", "hostname", "hostname.name"),
    ("/etc/hosts", "hostname", "hostname.name"),
    ("/etc/timezone", "timezone", "timezone.zone"),
    ("/etc/machine-id", "machine-id", "machine-id.id"),
    ("/etc/ssh/ssh_host_ed25519_key", "stash", ""),
    ("/etc/issue", "reference", ""),
)
REGISTRY: dict[str, tuple[str, str]] = {  # key -> (operator, help)
    "hostname.name": ("hostname", "the host name: letters, digits and '-', 1 to 63"),
    "timezone.zone": ("timezone", "an IANA time zone, e.g. Europe/Berlin"),
    "machine-id.id": ("machine-id", "32 lower-case hex digits"),
}
IMAGE_FILES = {"/etc/hostname": "debian", "/etc/hosts": "127.0.1.1 debian",
               "/etc/timezone": "Etc/UTC", "/etc/machine-id": "(empty)",
               "/etc/ssh/ssh_host_ed25519_key": "(absent)",
               "/etc/issue": "Debian GNU/Linux 13"}
MACHINE_ID = "0123456789abcdef0123456789abcdef"


def rendered(path: str, value: str) -> str:
    """A registry value as its file shows it (one line)."""
    return f"127.0.1.1 {value}" if path == "/etc/hosts" else value


def invalid(now: str) -> bool:
    return now in ("(deleted)", "(empty)") or now.startswith("unparsable")


class FakeState:
    """The managed state of the fake engine: captures (newest first), stashed files, and the
    files as the system holds them now (one-line values, as ``StateItem.now`` shows them)."""

    def __init__(self, *, captured: bool = True) -> None:
        self.captures: list[CaptureInfo] = []
        self.stash: dict[str, str] = {}
        values = {"hostname.name": "web01", "timezone.zone": "Europe/Berlin",
                  "machine-id.id": MACHINE_ID}
        if captured:
            self.stash["/etc/ssh/ssh_host_ed25519_key"] = "sha256 1a2b3c4d"
            self.capture("boot", values)
        self.now = {path: self.written(path)[0] for path, _op, _key in MANAGED}
        self.warnings: tuple[str, ...] = ()  # what a restore could not write

    def values(self) -> dict[str, str | None]:
        last = self.captures[0] if self.captures else None
        got = {v.key: v.value for v in last.values} if last else {}
        return {key: got.get(key) for key in REGISTRY}

    def capture(self, reason: str, values: Mapping[str, str | None]) -> CaptureInfo:
        made = T0 + timedelta(hours=len(self.captures))
        info = CaptureInfo(
            id=made.strftime("%Y%m%dT%H%M%SZ") + f"-{reason}", created=made, reason=reason,
            stack=("base", "apps"),
            values=tuple(RegistryValue(key, values.get(key), op,
                                       tuple(p for p, o, _k in MANAGED if o == op), help_)
                         for key, (op, help_) in REGISTRY.items()),
            stashed=tuple(self.stash), notes=())
        self.captures.insert(0, info)
        return info

    def written(self, path: str) -> tuple[str, str]:
        """What a fresh layer gets at ``path``, and from where."""
        key = dict((p, k) for p, _o, k in MANAGED)[path]
        last = self.captures[0] if self.captures else None
        value = self.values().get(key) if key else self.stash.get(path)
        if last is None or value is None or path == "/etc/issue":
            return IMAGE_FILES[path], "the image"
        return rendered(path, value), f"capture {last.id}"

    def plan(self) -> StatePlan:
        last = self.captures[0] if self.captures else None
        items = []
        for path, op, key in MANAGED:
            now = self.now[path]
            written, source = self.written(path)
            changed = written != now
            items.append(StateItem(
                path, op, choice=op if key else (path if op == "stash" else ""), now=now,
                now_valid=not invalid(now), written=written, source=source,
                changed=changed,
                can_keep=changed and not invalid(now) and op != "reference"))
        return StatePlan(last.id if last else None, last.created if last else None,
                         tuple(items))

    def renew(self, keep: Collection[str]) -> RestoreResult:
        """A fresh layer: every managed path written, but those whose choice is kept."""
        plan = self.plan()
        for c in keep:
            if c not in plan.choices:
                raise UsageError(f"cannot keep {c!r}: not one of {', '.join(plan.choices)}")
        kept = tuple(i.path for i in plan.items if i.choice in keep)
        written = tuple(i.path for i in plan.items
                        if i.path not in kept and i.operator != "reference")
        for i in plan.items:
            if i.path not in kept:
                self.now[i.path] = i.written
        return RestoreResult(LayerStats("/d/layer/upper", 0, 0, 0, 0, 0), "/d/trash/1",
                             written, kept, self.warnings)

    def set(self, values: Mapping[str, str | None]) -> CaptureInfo:
        for key, value in values.items():
            if key not in REGISTRY:
                raise UsageError(f"no setting {key!r}: one of {', '.join(REGISTRY)}")
            if key == "hostname.name" and value is not None and not re.fullmatch(
                    r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", value):
                raise UsageError(f"hostname.name: {value!r} is not a host name "
                                 "(letters, digits and '-', 1 to 63)")
        return self.capture("set", {**self.values(), **values})
