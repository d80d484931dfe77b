"""``ibi demo``: build a small root tree, make a store of it, make a restore point, leave
some changes in the writable layer, print the status and open the menu."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .engine import Engine
from .model import Kind, ProgressFn

DEMO_FILES = {
    "etc/hostname": "ibi-demo\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tibi-demo\n",
    "etc/timezone": "Europe/Berlin\n",
    "usr/share/zoneinfo/Europe/Berlin": "TZif2 (a stand-in)\n",
    "etc/machine-id": "5f0c6a9e3b1d4c7e8a2f9b6d0e1c3a57\n",
    "etc/default/locale": "LANG=C.UTF-8\n",
    "etc/ssh/ssh_host_ed25519_key": "demo host key (a stand-in)\n",
    "etc/os-release": 'PRETTY_NAME="ibi demo root"\nID=ibidemo\n',
    "etc/motd": "Welcome to the ibi demo root.\n",
    "etc/app.conf": "colour = blue\n",
    "usr/bin/hello": "#!/bin/sh\necho hello from the ibi demo\n",
    "usr/share/doc/ibi-demo/README": "A tiny tree standing in for a real root.\n" * 50,
    "var/lib/demo/state": "1\n",
}
DEMO_DIRS = ("home", "root", "tmp", "proc", "sys", "dev", "run", "var/log")


def build_tree(root: Path) -> None:
    for d in DEMO_DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    for rel, text in DEMO_FILES.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    os.chmod(root / "usr/bin/hello", 0o755)
    os.chmod(root / "tmp", 0o1777)
    os.symlink("../usr/bin", root / "bin", target_is_directory=True)
    os.symlink("/usr/share/zoneinfo/Europe/Berlin", root / "etc/localtime")
    os.chmod(root / "etc/ssh/ssh_host_ed25519_key", 0o600)


def _session(eng: Engine, work: Path, edit: dict[str, str | None]) -> None:
    """Mount the stack, apply ``edit`` (path -> text, or None to delete), unmount."""
    target = work / "root"
    target.mkdir(exist_ok=True)
    eng.mount(target)
    try:
        for rel, text in edit.items():
            p = target / rel
            if text is None:
                p.unlink()
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    finally:
        eng.umount(target)


def run_demo(eng: Engine, args: argparse.Namespace, progress: ProgressFn) -> int:
    eng.data_dir.mkdir(parents=True, exist_ok=True)
    if not eng.store.exists():
        with tempfile.TemporaryDirectory(prefix="ibi-demo-") as tmp:
            work = Path(tmp)
            tree = work / "tree"
            build_tree(tree)
            print(f"building a demo store in {eng.data_dir}", file=sys.stderr)
            eng.init(source_dir=tree, description="demo base system", progress=progress)
            _session(eng, work, {"etc/app.conf": "colour = green\n",
                                 "usr/bin/tool": "#!/bin/sh\necho tool 1.0\n",
                                 "etc/motd": None})
            eng.create(Kind.INCREMENTAL, name="tool-installed",
                       description="installed tool, green colour", progress=progress)
            eng.reclaim()  # the cleared layer (small: no need for the background)
            # the damage Restore System repairs: the hostname deleted, the host key replaced
            _session(eng, work, {"etc/hostname": None,
                                 "etc/ssh/ssh_host_ed25519_key": "another key\n",
                                 "var/lib/demo/state": "2\n",
                                 "home/demo-user-file": "kept on restore\n",
                                 "usr/share/doc/ibi-demo/README": None})
    from .output import print_status

    print_status(eng.status())
    if args.no_menu or not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(f"\nopen the menu with: ibi menu --data {eng.data_dir}")
        return 0
    from .commands import exec_menu

    return exec_menu(["--data", str(eng.data_dir), "--run-dir", str(eng.run_dir),
                      "--decision", str(eng.data_dir.parent / "demo-decision")])
