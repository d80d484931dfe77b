"""Typed errors. Every message is one line a user can act on; ``hint`` says what to do next."""

from __future__ import annotations


class IbiError(Exception):
    """Base class: an expected failure with a user-facing message (never a traceback)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(IbiError):
    """The caller asked for something malformed (bad name, missing argument)."""

    exit_code = 2


class BadName(UsageError):
    """An image name outside the safe charset."""


class StoreError(IbiError):
    """The store is missing, unreadable or inconsistent (roottab, metadata)."""


class NotFound(IbiError):
    """A named image or path does not exist."""


class InUse(IbiError):
    """The thing is in use (mounted, in the active stack, depended upon)."""


class NoSpace(IbiError):
    """Not enough free space to do the work; the message carries the figures."""


class IntegrityError(IbiError):
    """A checksum or metadata check failed."""


class MountError(IbiError):
    """Assembling or taking down a stack failed."""


class Unsuitable(IbiError):
    """This machine or device cannot be used for what was asked (ibi install's checks)."""


class TooDeep(IbiError):
    """A change would make a stack deeper than the boot path can assemble."""


class Refused(IbiError):
    """A destructive action was not confirmed."""


class CommandError(IbiError):
    """An external command failed; carries its argv, exit status and stderr."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "")
        msg = f"{argv[0]} failed (exit {returncode})" + (f": {last.strip()}" if last else "")
        super().__init__(msg)
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
