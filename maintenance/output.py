"""What every ``ibi`` subcommand prints its result with (cli.py and the *cli.py modules)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .errors import Refused
from .model import Level, Progress, Status, to_jsonable
from .status import human
from .wording import notice_text


def emit(args: argparse.Namespace, result: Any, text: Callable[[], object]) -> None:
    """With --json, the result as JSON; else ``text()`` prints it for people."""
    if getattr(args, "json", False):
        print(json.dumps(to_jsonable(_worded(result)), indent=2))
    else:
        text()


def _worded(result: Any) -> Any:
    """A status's notices with their words (``message``) beside their code and data."""
    if not isinstance(result, Status):
        return result
    doc = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    doc["notices"] = [{**to_jsonable(n), "message": notice_text(n)} for n in result.notices]
    doc["ok"] = result.ok
    return doc


class Reporter:
    """Progress on stderr: a live line on a terminal, phase changes otherwise. A report
    without a known total (a step of a longer action) is a line of its own."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.phase = ""
        self.live = False  # a \r-updated line is open on the terminal

    def __call__(self, p: Progress) -> None:
        if self.quiet:
            return
        frac = p.fraction
        if self.tty and frac is not None:
            sys.stderr.write(f"\r{p.phase:>10} {frac * 100:5.1f}% {p.message[:50]:<50}")
            self.live = frac < 1.0
            if not self.live:
                sys.stderr.write("\n")
        elif p.phase != self.phase:
            if self.live:
                sys.stderr.write("\n")
                self.live = False
            sys.stderr.write(f"{p.phase} {p.message}\n")
        sys.stderr.flush()
        self.phase = p.phase


def print_status(s: Status) -> None:
    print(f"ibi store in {s.data_dir}")
    print("Stack (bottom first):")
    for i, e in enumerate(s.stack, 1):
        when = e.created.strftime("%Y-%m-%d %H:%M") if e.created else "?"
        mark = "ok" if e.chain_ok and e.present else "BROKEN"
        kind = e.kind.value if e.kind else "?"
        print(f"  {i:>2}  {e.name:<24} {kind:<11} {when}  {human(e.size):>10}  {mark}"
              + ("  pinned" if e.name in s.pinned else "")
              + (f"  {e.description}" if e.description else ""))
        print_kernels(e.kernels)
    if s.layer:
        ly = s.layer
        print(f"  --  writable layer: {human(ly.bytes)}, {ly.changed} changed, "
              f"{ly.deleted} deleted, {ly.opaque} opaque dirs")
        if s.layer_kernels:
            print("        kernel installed in the layer (Restore System discards it): "
                  + ", ".join(s.layer_kernels))
    if s.other_images:
        print("Other restore points (not in the stack):")
        for e in s.other_images:
            when = e.created.strftime("%Y-%m-%d %H:%M") if e.created else "?"
            kind = e.kind.value if e.kind else "?"
            print(f"      {e.name:<24} {kind:<11} {when}  {human(e.size):>10}"
                  + ("  pinned" if e.name in s.pinned else ""))
            print_kernels(e.kernels)
    if s.boot_kernel:
        print(f"Next boot: Linux {s.boot_kernel}")
    d = s.disk
    print(f"Data partition: {human(d.used)} used, {human(d.free)} free of {human(d.total)} "
          f"(images {human(d.store)}, layer {human(d.layer)}, trash {human(d.trash)})")
    print(f"RAM: {human(s.ram.available)} available of {human(s.ram.total)}")
    for t in s.ram.tmpfs:
        print(f"  tmpfs {t.mountpoint}: {human(t.used)} of {human(t.total)} "
              f"({t.fraction:.0%} full)" + (f", the upper of {t.serves}" if t.serves else ""))
    for n in s.notices:
        tag = {Level.ERROR: "error", Level.WARNING: "warning", Level.INFO: "note"}[n.level]
        print(f"{tag}: {notice_text(n)}")


def print_kernels(versions: Sequence[str]) -> None:
    if versions:
        more = f" (also {', '.join(versions[1:])})" if versions[1:] else ""
        print(f"        kernel {versions[0]}{more}")


def confirm(args: argparse.Namespace, word: str, explanation: str) -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise Refused(f"{args.cmd} needs confirmation: add --yes")
    print(explanation)
    answer = input(f"Type {word} to go on, anything else to cancel: ")
    if answer.strip() != word:
        raise Refused("cancelled; nothing was changed")
