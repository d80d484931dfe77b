"""``scripts/demo --vm``: boot a machine set up with ibi in qemu, on this terminal.

Builds (once; cached like the VM tests' disks) a conventional Debian disk, installs the ibi
package in it and runs ``ibi install`` — exactly what tests/vm/test_install.py boots — then
starts qemu on a fresh copy-on-write overlay with its serial console on this terminal, GRUB
first: pick "ibi Maintenance Mode" with the arrow keys to meet the menu, or a Live Review.
Ctrl-A then X quits qemu. The first run takes several minutes under software emulation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guest as guestmod
import qemu
from installed import installed_disk


def main() -> int:
    if os.geteuid() != 0:
        print("demo --vm: run as root (it builds disk images with loop devices)",
              file=sys.stderr)
        return 2
    missing = guestmod.missing_tools() or ([r] if (r := qemu.qemu_missing()) else [])
    if missing:
        print(f"demo --vm: missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    c = guestmod.cache_dir()
    disk, _record = installed_disk(c / "demo-logs")
    overlay = c / "demo-vm.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(disk),
                    str(overlay)], check=True)
    print(f"demo --vm: booting {overlay} (a throw-away overlay of {disk.name}).\n"
          "GRUB's menu comes first: the ibi stack is the default; choose 'ibi Maintenance "
          "Mode' for the menu, or a Live Review. Log in as root (no password).\n"
          "Quit qemu with Ctrl-A then X.", flush=True)
    argv = qemu.qemu_argv(None, None, overlay, "", memory="1024", smp=2)
    argv.remove("-no-reboot")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
