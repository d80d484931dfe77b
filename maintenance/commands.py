"""What each ``ibi`` subcommand does: one function per command, looked up in
:data:`COMMANDS` by :func:`run_command` (cli.py builds the parser and calls it)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from . import authcli, compactcli, importcli, prunecli, statecli, updatecli
from .engine import DEFAULT_DATA, Engine
from .errors import IbiError, NotFound, UsageError
from .model import LayerStats, StatePlan
from .output import Reporter, confirm, emit, print_status
from .pending import check_tries
from .status import RAM_CRITICAL, RAM_WARN, human, tmpfs_uppers


def watch_ram(args: argparse.Namespace) -> int:
    """``ibi watch-ram``: the fill level of every RAM overlay; with --interval, a warning
    on the console and in the journal (stderr) each time one crosses 80 % or 95 %."""
    if args.interval is not None and not 1 <= args.interval <= 86400:
        raise UsageError("--interval is 1 to 86400 seconds")
    said: dict[str, int] = {}
    while True:
        uses = tmpfs_uppers()
        worst = 0
        for t in uses:
            level = 2 if t.fraction >= RAM_CRITICAL else 1 if t.fraction >= RAM_WARN else 0
            worst = max(worst, level)
            if level > said.get(t.mountpoint, 0):
                line = (f"ibi: {'CRITICAL' if level == 2 else 'warning'}: the RAM overlay "
                        f"{t.mountpoint}{f' (upper of {t.serves})' if t.serves else ''} is "
                        f"{t.fraction:.0%} full ({human(t.used)} of {human(t.total)})"
                        + ("; writes fail when it is full" if level == 2 else ""))
                print(line, file=sys.stderr, flush=True)
                if args.interval is not None:
                    with contextlib.suppress(OSError), open("/dev/console", "w") as con:
                        con.write(line + "\n")
            said[t.mountpoint] = level if level else 0  # falls back: warn again later
        if args.interval is None:
            text = "\n".join(f"{t.mountpoint}: {t.fraction:.0%} full ({human(t.used)} of "
                             f"{human(t.total)})" for t in uses) or "no overlay writes to RAM"
            emit(args, uses, functools.partial(print, text))
            return 1 if worst == 2 else 0
        time.sleep(args.interval)


def restore_explanation(engine: Engine, what: str, plan: StatePlan,
                        stats: LayerStats | None = None) -> str:
    stats = stats or engine.restore_plan()
    lines = [f"{what} discards the writable layer: {stats.changed} changed files, "
             f"{stats.deleted} deletions, {stats.opaque} replaced directories "
             f"({human(stats.bytes)})."]
    sample = engine.changes(limit=10)
    lines += [f"    {c.what:<8} {c.path}" for c in sample]
    if stats.changed + stats.deleted + stats.opaque > len(sample):
        lines.append("    ... (ibi changes lists them all)")
    lines.append("Kept: /home, every image.")
    lines += statecli.plan_lines(plan)
    return "\n".join(lines)


def undo(eng: Engine, args: argparse.Namespace) -> int:
    """ibi restore --undo: show (--dry-run), confirm, do or queue."""
    plan = eng.undo_plan()
    if plan is None:
        raise NotFound("no set-aside writable layer to put back (none was set aside, or "
                       "ibi purge deleted them)")
    entry, stack, stats = plan
    now = eng.restore_plan()
    text = (f"Undo puts back the writable layer set aside in {entry} ({stats.changed} "
            f"changed files, {human(stats.bytes)}) with its stack [{' '.join(stack)}].\n"
            f"The current layer ({now.changed} changed files, {human(now.bytes)}) is set "
            "aside in turn: undo again to get it back.")
    if args.dry_run:
        emit(args, {"put_back": entry, "stack": stack, "layer": stats},
             lambda: print(text + "\n(--dry-run: nothing was changed)"))
        return 0
    confirm(args, "UNDO", text)
    if args.next_boot:
        eng.queue("undo")
        print("the undo will run at the next boot")
        return 0
    res = eng.undo()
    emit(args, res, lambda: print(
        f"put back {res.put_back}: the stack is [{' '.join(res.stack)}]; the layer it "
        f"replaced is in trash/{res.set_aside} (ibi restore --undo again to swap back)"))
    return 0


def restore_like(eng: Engine, args: argparse.Namespace, name: str | None) -> int:
    """ibi restore, ibi rollback and ibi switch: show (--dry-run), confirm, do or queue."""
    switch = args.cmd == "switch"
    what, word = ("Restore System", "RESTORE") if name is None else \
        ("Switch", "SWITCH") if switch else ("Roll back", "ROLLBACK")
    plan = eng.state_plan(name, args.keep_current)
    head = "" if name is None else f"The stack becomes: {' '.join(eng.stack_for(name))}.\n"
    if args.dry_run:
        now = eng.restore_plan()
        emit(args, {"discard": now, "state": plan}, lambda: print(
            head + restore_explanation(eng, what, plan, now)))
        return 0
    # the figures shown are the figures reported (with --yes they are counted after)
    stats: LayerStats | None = None if args.yes else eng.restore_plan()
    if stats is not None:
        confirm(args, word, head + restore_explanation(eng, what, plan, stats))
    action = "restore" if name is None else "rollback"
    if args.next_boot:
        eng.queue(action, name=name, keep=args.keep_current,
                  reason="switch" if switch else None, tries=eng.trial_tries)
        print(f"{what} will run at the next boot")
        return 0
    if name is not None:
        stack = eng.rollback(name, args.keep_current,
                             reason="switch" if switch else "rollback")
        t = eng.trial()
        emit(args, {"stack": stack, "trial": t}, lambda: print(
            f"stack is now: {' '.join(stack)}" + (
                f"\non trial: {t.tries} boots to complete one, else back to "
                f"[{' '.join(t.good)}]" if t else "")))
        return 0
    res = eng.restore(args.keep_current, stats)

    def text() -> None:
        print(f"restored: discarded {res.discarded.changed} changed files and "
              f"{res.discarded.deleted} deletions ({human(res.discarded.bytes)})")
        if res.written:
            print(f"  written from the last capture: {', '.join(res.written)}")
        if res.kept_current:
            print(f"  kept as they were: {', '.join(res.kept_current)}")
        for w in res.warnings:
            print(f"ibi: warning: {w}", file=sys.stderr)
    emit(args, res, text)
    return 0


def exec_menu(menu_args: list[str]) -> int:
    """Replace this process by the menu: ``ibi-menu`` beside this ``ibi`` (the package
    installs both in /usr/bin), else ``python3 -m screens`` (a source tree). The engine
    package never imports the menu (screens/ imports the engine, not the other way)."""
    here = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    menu = here / "ibi-menu" if here else None
    env = dict(os.environ)
    if menu is not None and os.access(menu, os.X_OK):
        argv = [str(menu), *menu_args]
    else:
        root = str(Path(__file__).resolve().parent.parent)  # where screens/ is too
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
        argv = [sys.executable, "-m", "screens", *menu_args]
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(argv[0], argv, env)
    except OSError as e:
        raise IbiError(f"the maintenance menu cannot be started ({argv[0]}: {e.strerror})",
                       hint="reinstall the ibi package") from None
    return 1  # not reached


def boot_entries(eng: Engine, args: argparse.Namespace) -> int:
    from . import bootloader, bootplan

    eng.store.require()
    warnings: list[str] = []
    if args.write:
        warnings = eng.sync_kernels()
    plan = bootplan.build(eng.store)
    current = bootplan.is_current(eng.store)
    grub = bootloader.cfg_path(eng.store) if eng.store.bootloader_conf.is_file() else None
    kmap = bootloader.entry_kernels(eng.store, plan)
    entries = {k: (v.version if v else None) for k, v in kmap.items()}
    for w in warnings:
        print(f"ibi: warning: {w}", file=sys.stderr)
    if args.quiet and not getattr(args, "json", False):  # the kernel hook: one line
        if args.write and entries.get("ibi"):
            print(f"ibi: boot entries renewed; the next boot uses Linux {entries['ibi']}")
        return 0 if current else 3

    def text() -> None:
        print(bootplan.render(plan), end="")
        if not current:
            print("note: the boot plan on disk is out of date (ibi boot-entries --write)")
        print("Kernels:")
        for key, version in entries.items():
            what = {"ibi": "normal boot", "ibi-maintenance": "Maintenance Mode"}.get(
                key, key.replace("review:", "Live Review of "))
            print(f"  {what}: " + (f"Linux {version}" if version else
                                   "the kernel ibi install set up" if grub else "none kept"))
        if grub:
            print(f"GRUB's menu: {grub}")

    emit(args, {"plan": plan, "current": current, "kernels": entries,
                "grub_cfg": str(grub) if grub else None}, text)
    return 0 if current else 3


def install_command(args: argparse.Namespace, rep: Reporter) -> int:
    from . import install, installplan

    plan = installplan.make_plan(args.device, label=args.label, force=args.force)
    if args.dry_run:
        emit(args, plan, lambda: print("\n".join(installplan.describe(plan))
                                       + "\n(--dry-run: nothing was changed)"))
        return 0
    confirm(args, plan.device, "\n".join(installplan.describe(plan)))
    eng = install.install(plan, run_dir=Path(args.run_dir), progress=rep)
    emit(args, {"installed": plan.device, "data": str(eng.data_dir)}, lambda: print(
        f"ibi is installed on {plan.device}; reboot to start the image stack. The original "
        f"system on {plan.root_source} is unchanged"
        + (" and stays in the boot menu." if plan.original else ".")))
    return 0


Handler = Callable[[Engine, argparse.Namespace, Reporter], "int | None"]


def _init(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    meta = eng.init(source_dir=args.source_dir, image=args.image, name=args.name,
                    description=args.description, compressor=args.compressor,
                    level=args.level, progress=rep)
    emit(args, meta, lambda: print(f"created store in {eng.data_dir} with base image "
                                   f"{meta.name} ({human(meta.size)})"))


def _status(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    st = eng.status()
    emit(args, st, lambda: print_status(st))
    return 0 if st.ok else 3


def _changes(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    ch = eng.changes(args.limit)
    emit(args, ch, lambda: [print(f"{c.what:<8} {c.path}") for c in ch])


def _mount(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    r = eng.mount(args.target, fallback=args.fallback, readonly=args.read_only)
    emit(args, r, lambda: print(f"mounted [{' '.join(r.stack)}] on {r.target}"
                                + (" (from roottab.prev)" if r.roottab != "roottab" else "")))


def _umount(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    n = eng.umount(args.target)
    if not args.quiet:
        print(f"unmounted {n} mounts")


def _review(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    r = eng.review(args.name, args.target, tmpfs_size=args.size)
    emit(args, r, lambda: print(f"live review of [{' '.join(r.stack)}] on {r.target}; "
                                "nothing written there is kept"))


def _create(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    if args.next_boot:
        eng.queue(args.kind.value, name=args.name, description=args.description)
        print(f"a {args.kind.value} restore point will be made at the next boot")
        return
    meta = eng.create(args.kind, name=args.name, description=args.description,
                      compressor=args.compressor, level=args.level, progress=rep)
    emit(args, meta, lambda: print(f"created {meta.kind.value} restore point {meta.name} "
                                   f"({human(meta.size)}); the writable layer is now empty"))
    eng.reclaim_later()  # the cleared layer's files


def _restore(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    return undo(eng, args) if args.undo else restore_like(eng, args, None)


def _rollback(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    if args.tries is not None:
        eng.trial_tries = check_tries(args.tries)
    return restore_like(eng, args, args.name)


def _delete(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    confirm(args, "DELETE", f"Image {args.name} will be deleted for good.")
    eng.delete(args.name)
    emit(args, {"deleted": args.name}, lambda: print(f"deleted {args.name}"))


def _verify(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    res = eng.verify(all_images=args.all, progress=rep)
    emit(args, res, lambda: [print(f"{'ok ' if i.ok else 'BAD'}  {i.name}"
                                   + (f": {i.problem}" if i.problem else ""))
                             for i in res.items])
    return 0 if res.ok else 3


def _recover(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    done = eng.recover()
    emit(args, {"done": done}, lambda: print("\n".join(done) or "nothing to recover"))


def _pending(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    if args.run:
        ran = eng.run_pending(progress=rep)
        emit(args, {"done": ran}, lambda: print(ran or "nothing queued"))
    elif args.cancel:
        had = eng.cancel_pending()
        emit(args, {"cancelled": had}, lambda: print("cancelled" if had else "nothing queued"))
    else:
        doc = eng.pending()
        emit(args, doc, lambda: print(" ".join(f"{k}={v}" for k, v in doc.items())
                                      if doc else "nothing queued"))


def _purge(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    held = eng.trash_bytes()
    if held:
        confirm(args, "PURGE", f"The set-aside layers in {eng.store.trash} "
                f"({human(held)}) will be deleted for good.")
    freed = eng.purge()
    emit(args, {"freed": freed}, lambda: print(f"freed {human(freed)}"))


def _reclaim(eng: Engine, args: argparse.Namespace, rep: Reporter) -> None:
    freed = eng.reclaim()
    emit(args, {"freed": freed}, lambda: None if args.quiet
         else print(f"freed {human(freed)}"))


def _menu(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    return exec_menu(["--data", args.data, "--run-dir", args.run_dir, *args.menu_args])


def _demo(eng: Engine, args: argparse.Namespace, rep: Reporter) -> int:
    from .demo import run_demo

    return run_demo(eng, args, rep)


COMMANDS: dict[str, Handler] = {
    "init": _init,
    "status": _status,
    "changes": _changes,
    "mount": _mount,
    "umount": _umount,
    "review": _review,
    "create": _create,
    "restore": _restore,
    "rollback": _rollback,
    "import": lambda eng, args, rep: importcli.run(eng, args, rep),
    "pin": lambda eng, args, rep: prunecli.run(eng, args),
    "unpin": lambda eng, args, rep: prunecli.run(eng, args),
    "prune": lambda eng, args, rep: prunecli.run(eng, args),
    "compact": lambda eng, args, rep: compactcli.run(eng, args, rep),
    **{cmd: (lambda eng, args, rep: updatecli.run(eng, args, emit, restore_like))
       for cmd in ("switch", "boot-ok", "boot-failed", "boot-fallback")},
    "state": lambda eng, args, rep: statecli.run(eng, args),
    "passwd": lambda eng, args, rep: authcli.run(eng, args),
    "delete": _delete,
    "verify": _verify,
    "recover": _recover,
    "pending": _pending,
    "purge": _purge,
    "reclaim": _reclaim,
    "watch-ram": lambda eng, args, rep: watch_ram(args),
    "boot-entries": lambda eng, args, rep: boot_entries(eng, args),
    "install": lambda eng, args, rep: install_command(args, rep),
    "menu": _menu,
    "demo": _demo,
}


def run_command(args: argparse.Namespace) -> int:
    """Carry out the parsed command ``args.cmd``; its exit status."""
    default = "demo" if args.cmd == "demo" else DEFAULT_DATA
    args.data = os.path.abspath(args.data or os.environ.get("IBI_DATA") or default)
    eng = Engine(args.data, args.run_dir)
    rep = Reporter(args.quiet or getattr(args, "json", False))
    return COMMANDS[args.cmd](eng, args, rep) or 0
