"""``ibi passwd``: the maintenance menu's password (maintenance/auth.py) on the command
line: set it, remove it, or say which password the menu asks for."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable

from . import auth
from .engine import Engine
from .errors import Refused, UsageError

Add = Callable[..., argparse.ArgumentParser]


def add_parser(add: Add) -> None:
    p = add("passwd", "set the maintenance menu's password", """\
        Set the maintenance password: the password the maintenance menu asks for, once
        per menu session, before its Shell and before every action that changes the store
        (Restore System, Create Full/Incremental Restore Point, Roll back, Delete, saving
        the saved settings, queueing an action for the next boot). Looking at the stack,
        the disk use and what the writable layer changed, Verify, Live Review, Continue
        booting, Reboot and Power off never ask.

        Without a maintenance password the menu asks for root's password of the system
        being maintained, as systemd's sulogin does: from the writable layer's
        /etc/shadow when the layer holds one, else from the image stack's. When root's
        password is empty, or root is locked (a password field starting with '!' or '*',
        as on a system that uses sudo), the menu asks for nothing: set a maintenance
        password to guard it then. A maintenance password replaces root's.

        The password is asked twice on the terminal (--stdin: read from the first line of
        standard input instead, for scripts) and kept hashed (scrypt, a random salt) in
        DATA/.root_images/maintenance.passwd, mode 0600 (see docs/FORMAT.md). A garbled
        file keeps the guarded actions locked until it is set again or removed.

        Whoever can edit the boot menu's kernel command line can boot around the menu:
        guard GRUB with its own password too.

        exit status: 0 done; 1 failed (the two passwords differ, the store cannot be
        written, the password in use cannot be read); 2 bad usage (an empty password).

        examples:
          ibi passwd                                   set it (asked twice)
          printf '%s\\n' "$PW" | ibi passwd --stdin     set it from a script
          ibi passwd --status                          which password the menu asks for
          ibi passwd --remove                          root's password guards it again""",
        True)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--stdin", action="store_true",
                     help="read the new password from the first line of standard input")
    how.add_argument("--remove", action="store_true",
                     help="remove the maintenance password: the menu asks for root's again")
    how.add_argument("--status", action="store_true",
                     help="say which password the menu asks for now; change nothing")
    p.add_argument("--root", metavar="DIR", default="/",
                   help="--status: the system whose /etc/shadow counts when the writable "
                        "layer has none (default: /)")


def run(eng: Engine, args: argparse.Namespace) -> int:
    store = eng.store
    if args.status:
        return status(args)
    store.require()  # before a password is typed for nothing
    if args.remove:
        had = auth.remove_maintenance(store)
        _emit(args, {"maintenance_password": False, "removed": had}, (
            "removed the maintenance password: the menu asks for root's password again"
            if had else "no maintenance password was set: nothing changed"))
        return 0
    password = _read_stdin() if args.stdin else _ask()
    auth.set_maintenance(store, password)
    _emit(args, {"maintenance_password": True, "path": str(store.auth_path)},
          "maintenance password set: the menu's Shell and the actions that change the "
          "store ask for it")
    return 0


def status(args: argparse.Namespace) -> int:
    guard = auth.Auth(args.data, root=args.root).required()
    if guard is None:
        text = ("the menu asks for no password: root's is empty or locked, and no "
                "maintenance password is set (ibi passwd sets one)")
    elif guard.kind == "maintenance":
        text = f"the menu asks for the maintenance password ({guard.source})"
    else:
        text = f"the menu asks for root's password (from {guard.source})"
    _emit(args, {"asks": guard.kind if guard else None,
                 "source": str(guard.source) if guard else None}, text)
    return 0


def _emit(args: argparse.Namespace, doc: dict[str, object], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
    elif not args.quiet:
        print(f"ibi: {text}")


def _read_stdin() -> str:
    line = sys.stdin.readline()
    password = line.rstrip("\r\n") if line.endswith("\n") else line
    if not password:
        raise UsageError("no password on standard input (its first line is empty)")
    return password


def _ask() -> str:
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask the password on: use --stdin")
    first = getpass.getpass("New maintenance password: ")
    if not first:
        raise UsageError("the maintenance password cannot be empty "
                         "(ibi passwd --remove goes back to root's password)")
    if getpass.getpass("Again: ") != first:
        raise Refused("the two passwords differ; nothing was changed")
    return first
