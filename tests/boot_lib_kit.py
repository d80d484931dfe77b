"""The kit of the initramfs's shell tests (for tests/test_boot_checks.py and
tests/test_boot_checks_system.py; not collected itself): ibi-lib.sh run under dash (else
sh) with dracut-lib.sh's functions stubbed (lib; MEMINFO is the /proc/meminfo it reads), and
the mounts under a path (mounts_under, umount_all)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "dracut-module/90ibi/ibi-lib.sh"
SH = shutil.which("dash") or "sh"

# what dracut-lib.sh provides, reduced to what ibi-lib.sh uses; the kernel command line is
# $CMDLINE; ibi_log writes "PRIO: message" on stderr instead of /dev/kmsg and the console
STUBS = """
getarg() {
    for _a in $CMDLINE; do
        case $_a in "$1"*) echo "${_a#"$1"}"; return 0 ;; esac
    done
    return 1
}
ismounted() { grep -q " $1 " /proc/self/mounts; }
label_uuid_to_dev() { echo "/dev/disk/by-label/${1#LABEL=}"; }
"""
LOG_STUB = 'ibi_log() { _p=$1; shift; echo "$_p: $*" >&2; }'

MEMINFO = """MemTotal:        2000000 kB
MemFree:          900000 kB
MemAvailable:    1500002 kB
Buffers:            1000 kB
"""


def lib(data: Path, script: str, cmdline: str = "",
        meminfo: str = MEMINFO) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in dash (else sh) with ibi-lib.sh sourced, IBI_DATA on ``data`` and
    IBI_RUN, IBI_LOWER, /proc/meminfo in a directory beside it."""
    run = data.parent / "run"
    run.mkdir(exist_ok=True)
    (run / "meminfo").write_text(meminfo)
    text = (f"{STUBS}\nIBI_LIBDIR={LIB.parent}\n. {LIB}\n{LOG_STUB}\nCMDLINE='{cmdline}'\n"
            f"IBI_DATA={data}\nIBI_RUN={run}\nIBI_LOWER={run}/lower\nIBI_MEMINFO={run}/meminfo\n{script}\n")
    return subprocess.run([SH, "-c", text], capture_output=True, text=True)


def mounts_under(path: Path) -> list[str]:
    return [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
            if ln.split()[4].startswith(str(path))]


def umount_all(path: Path) -> None:
    for mp in reversed(mounts_under(path)):
        subprocess.run(["umount", mp], check=True)
