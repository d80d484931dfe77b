"""``ibi switch``, ``ibi boot-ok`` and ``ibi boot-failed``: updates that cannot strand a
machine (docs/FORMAT.md, "Updates"). A switch, a roll back or a restore point that changes
roottab puts the new stack on trial; the initramfs counts its boots; a boot that completes
(boot-complete.target and its health checks) marks it good; when the tries run out the
initramfs falls back to the last good stack by itself."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from . import run as runmod
from .engine import Engine
from .errors import CommandError
from .pending import check_tries
from .wording import fallback_text

Add = Callable[..., argparse.ArgumentParser]
Restore = Callable[[Engine, argparse.Namespace, "str | None"], int]

TRIES_HELP = ("boots the new stack may try before the initramfs falls back (default: "
              "boot_tries in DATA/.root_images/policy, else 3; 0: no trial)")


def tries_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tries", type=int, default=None, metavar="N", help=TRIES_HELP)


def add_parser(add: Add, restore_opts: Callable[[argparse.ArgumentParser], None]) -> None:
    p = add("switch", "make the stack end at another image (an update, or back)", """\
        Make the active stack the one ending at image NAME: for a full or base image
        (one made by ibi create --full, or brought in by ibi import) just [NAME], for an
        incremental its stack up to NAME. The writable layer is set aside like Restore
        System does (ibi restore --undo puts it back) and the managed config (ibi state)
        is written into the fresh layer for the new stack. One commit point: a power cut
        leaves the old stack or the new one. The previous stack stays in the store:
        switching back is the same command.

        The new stack is on trial: the initramfs counts its boots, and a boot that
        completes (boot-complete.target: ibi's health checks in /etc/ibi/health.d and
        systemd-boot-check-no-failures.service when enabled) marks it good
        (ibi-boot-ok.service). A boot that fails its health checks reboots; when the
        tries are used up, the initramfs makes the last good stack active again, with
        its writable layer, by itself, and ibi status says so.

        Run it from Maintenance Mode, or with --next-boot in the running system (the
        layer it sets aside is in use). Asks for confirmation unless --yes.

        examples:
          ibi import --image debian-13.sqfs --name trixie
          ibi switch trixie --next-boot && reboot
          ibi switch base --yes              (in Maintenance Mode: back again)""", True)
    p.add_argument("name", metavar="NAME")
    restore_opts(p)
    tries_arg(p)

    p = add("boot-ok", "mark the booted stack good (end its trial)", """\
        Mark the active stack good: a boot of it completed. ibi-boot-ok.service runs this
        after boot-complete.target, which requires ibi-health.service (the checks in
        /etc/ibi/health.d, /usr/lib/ibi/health.d). With --cancel, forget the trial from
        anywhere (the stack is taken as good: no automatic fallback). Prints what it
        ended; nothing when the stack was not on trial.""", True)
    p.add_argument("--cancel", action="store_true",
                   help="forget the trial without a completed boot")
    boot_arg(p)

    p = add("boot-fallback", "fall back from a stack whose tries are used (initramfs)", """\
        The initramfs runs this (with the good stack's own ibi) when the stack on trial
        has used up its boots without completing one: the last good stack becomes the
        active one again, durably, with the writable layer it had when it is still in
        DATA/trash (else a fresh one with the saved settings); the failed stack's layer is
        set aside (ibi restore --undo returns to it). ibi status then says what happened.
        Does nothing when no fallback is due.""", True)

    p = add("boot-failed", "record a failed boot of the stack on trial", """\
        Record that this boot of the active stack failed its health checks (WHY is kept
        and shown by ibi status, and after a fallback). ibi-boot-failed.service runs it
        when ibi-health.service fails. With --reboot, reboot when the stack is on trial:
        the next boot counts another try, or falls back to the last good stack. A stack
        that is not on trial is never rebooted (no reboot loop on a good stack).""", True)
    p.add_argument("--why", default="the health checks failed", metavar="TEXT",
                   help="what failed")
    p.add_argument("--reboot", action="store_true",
                   help="reboot when the stack is on trial")
    boot_arg(p)


def boot_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--boot", action="store_true",
                   help="only when / is the normal boot of the store (the units' way: a "
                        "Live Review or the RAM fallback counts for nothing)")


def run(eng: Engine, args: argparse.Namespace, emit: Callable[..., None],
        restore_like: Restore) -> int:
    if args.cmd == "switch":
        if args.tries is not None:
            eng.trial_tries = check_tries(args.tries)
        return restore_like(eng, args, args.name)
    boot_only = getattr(args, "boot", False) and not getattr(args, "cancel", False)
    if boot_only and not eng.booted_normally():
        print(f"ibi: {args.cmd}: / is not the normal boot of the store in "
              f"{eng.data_dir}: nothing to mark")
        return 0
    if args.cmd == "boot-ok":
        t = eng.cancel_trial() if args.cancel else eng.boot_ok()
        doc: dict[str, Any] = {"ended": t}
        emit(args, doc, lambda: print(
            "" if t is None else
            f"{'forgot the trial of' if args.cancel else 'marked good:'} "
            f"[{' '.join(t.stack)}]") if t or not args.quiet else None)
        return 0
    if args.cmd == "boot-fallback":
        fb = eng.boot_fallback()
        emit(args, {"fallback": fb}, lambda: print(
            fallback_text(fb) if fb else "no fallback is due"))
        return 0
    # boot-failed
    trial, boots = eng.boot_failed(args.why)
    if trial is None:
        emit(args, {"trial": None}, lambda: print(
            f"ibi: this boot failed ({args.why}); the stack is not on trial: no reboot"))
        return 0
    left = trial.tries - boots
    line = (f"ibi: boot {boots} of {trial.tries} of [{' '.join(trial.stack)}] failed "
            f"({args.why}); " + (f"{left} more before the fallback to "
                                 if left > 0 else "the next boot falls back to ")
            + f"[{' '.join(trial.good)}]")
    emit(args, {"trial": trial, "boots": boots}, lambda: print(line))
    if args.reboot:
        print("ibi: rebooting", file=sys.stderr, flush=True)
        try:
            runmod.run(["systemctl", "reboot"])
        except CommandError as e:
            print(f"ibi: error: cannot reboot: {e}", file=sys.stderr)
            return 1
    return 0
