"""``ibi state``: the managed config (state operators) on the command line, and the
per-path lines that Restore System's and Roll back's confirmations print."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .engine import Engine
from .errors import UsageError
from .model import CaptureInfo, StatePlan
from .output import emit

Add = Callable[..., argparse.ArgumentParser]


def add_parser(add: Add) -> None:
    p = add("state", "the config kept across Restore System (state operators)", """\
        The owner's configuration that Restore System and Roll back write into the fresh
        writable layer: each managed path has one operator, declared in
        DATA/state/state.yaml (default: written on first use; see docs/FORMAT.md):
          registry   values parsed from files and rendered back (hostname, timezone,
                     machine-id, locale), so a newer base gets a well-formed file
          stash      files and directories kept byte for byte (SSH host keys, ...)
          reference  always the image's version
        Values are captured while the system is good: at install, when a restore point
        is made, after each boot that reaches multi-user.target (ibi-state-save.service)
        and on `ibi state save`. A file that is deleted, empty or unparsable is never
        captured: the value before is kept. The newest captures are kept (keep: in
        state.yaml), in DATA/state/captures/.

        actions:
          list              the managed paths, the registry's values and the captures
          get KEY           print one registry value (e.g. hostname.name)
          set KEY=VALUE...  change registry values (a new capture; KEY= removes one);
                            the running system is not changed, Restore writes them
          save              capture the system as it is now (--boot: only in the
                            store's normal boot, as the unit runs it)
          diff              each managed path now against the last capture

        examples:
          ibi state list
          ibi state set hostname.name=office-pc timezone.zone=Europe/Berlin
          ibi state diff --json""", True)
    p.add_argument("action", choices=("list", "get", "set", "save", "diff"))
    p.add_argument("args", nargs="*", metavar="ARG", help="KEY for get; KEY=VALUE for set")
    p.add_argument("--boot", action="store_true",
                   help="save: only when / is the store's normal boot; else do nothing")


def run(eng: Engine, args: argparse.Namespace) -> int:
    action = args.action
    if action != "set" and args.args and action != "get":
        raise UsageError(f"ibi state {action} takes no arguments")
    if action == "save" and args.boot and not eng.booted_normally():
        if not args.quiet:
            print("ibi: / is not this store's normal boot (a Live Review, another system): "
                  "nothing captured")
        return 0
    eng.store.require()
    if action == "list":
        values = eng.state_values()
        caps = eng.state_captures()
        cfg = eng.state_config()
        paths = ([{"path": p, "operator": op.name} for op in cfg.registry for p in op.paths]
                 + [{"path": p, "operator": "stash"} for p in cfg.stash]
                 + [{"path": p, "operator": "reference"} for p in cfg.reference])
        emit(args, {"paths": paths, "values": values, "captures": caps},
             lambda: print_list(paths, caps))
    elif action == "get":
        if len(args.args) != 1:
            raise UsageError("ibi state get takes one KEY (ibi state list shows them)")
        found = [v for v in eng.state_values() if v.key == args.args[0]]
        if not found:
            keys = ", ".join(v.key for v in eng.state_values())
            raise UsageError(f"unknown key {args.args[0]!r} (keys: {keys})")
        v = found[0]
        if v.value is None:
            if not args.json:
                print(f"ibi: {v.key} is not captured (Restore leaves the image's file)",
                      file=sys.stderr)
            emit(args, v, lambda: None)
            return 1
        emit(args, v, lambda: print(v.value))
    elif action == "set":
        if not args.args:
            raise UsageError("ibi state set takes KEY=VALUE arguments")
        changes: dict[str, str | None] = {}
        for a in args.args:
            key, eq, value = a.partition("=")
            if not eq:
                raise UsageError(f"{a!r}: write KEY=VALUE (KEY= removes the value)")
            changes[key] = value or None
        cap = eng.state_set(changes)
        emit(args, cap, lambda: print(f"saved as capture {cap.id}: Restore System and Roll "
                                      "back write these values from now on"))
    elif action == "save":
        saved = eng.state_save("boot" if args.boot else "save")
        if saved is None:
            if not args.quiet:
                emit(args, None, lambda: print("nothing changed since the last capture"))
            return 0
        emit(args, saved, lambda: print(f"ibi: captured the config as {saved.id}"
                                        + "".join(f"\n  note: {n}" for n in saved.notes)))
    elif action == "diff":
        plan = eng.state_plan()
        emit(args, plan, lambda: print("\n".join(plan_lines(plan, diff=True))))
    return 0


def print_list(paths: list[dict[str, str]], caps: tuple[CaptureInfo, ...]) -> None:
    print("Managed paths:")
    for p in paths:
        print(f"  {p['path']:<44} {p['operator']}")
    if not caps:
        print("No capture yet (ibi state save makes one): Restore leaves the image's files.")
        return
    last = caps[0]
    print(f"Values (capture {last.id}, {last.reason}, "
          f"{last.created:%Y-%m-%d %H:%M UTC}):")
    for v in last.values:
        print(f"  {v.key:<22} {v.value if v.value is not None else '(not captured)'}")
    for s in last.stashed:
        print(f"  {'stash':<22} {s}")
    for n in last.notes:
        print(f"  note: {n}")
    if caps[1:]:
        print("Older captures: " + ", ".join(c.id for c in caps[1:]))


def plan_lines(plan: StatePlan, diff: bool = False) -> list[str]:
    """Per managed path: the value now, and what the fresh layer gets (or, for ``diff``,
    the last capture's value)."""
    if plan.capture is None:
        head = "Managed config: no capture yet, so the image's files are used."
    else:
        head = (f"Managed config, from capture {plan.capture}"
                f" ({plan.created:%Y-%m-%d %H:%M UTC}):" if plan.created else ":")
    out = [head]
    gets = "captured" if diff else "gets"
    for i in plan.items:
        who = f"[{i.operator}]"
        if not i.changed:
            out.append(f"  {i.path} {who}: {i.now} (unchanged)")
            continue
        out.append(f"  {i.path} {who}")
        bad = "" if i.now_valid else "   <- not valid: never kept"
        out.append(f"      now:  {i.now}{bad}")
        out.append(f"      {gets}: {i.written}" + ("" if diff else f"  ({i.source})"))
    choices = plan.choices
    if choices and not diff:
        out.append("  To keep a current value instead: --keep-current "
                   + " / ".join(choices))
    return out
