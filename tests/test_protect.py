"""systemd/ibi-protect.sh, the boot-time protection check, run in dash on mountinfo files
written here (the VM tests run it on real boots): the stack's images found through either
form of the overlay's lower options, each one checked read-only and squashfs, and every
problem named. A deep stack is read in one pass over mountinfo (the check was quadratic:
minutes for 101 images under emulation)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "systemd/ibi-protect.sh"
SH = shutil.which("dash") or "sh"
UPPER = "/run/ibi/data/layer/upper"


def mountinfo(n: int, *, plus: bool, rw: int | None = None, missing: int | None = None,
              not_squashfs: int | None = None, root_opts: str = "") -> str:
    """A booted ibi system's mountinfo with ``n`` images (``plus``: lowerdir+= options)."""
    lines = ["22 1 0:21 / /proc rw,nosuid - proc proc rw"]
    for i in range(1, n + 1):
        if i == missing:
            continue
        fs = "ext4" if i == not_squashfs else "squashfs"
        how = "rw" if i == rw else "ro"  # a writable image: an ext4 loop mounted rw, say
        lines.append(f"{100 + i} 30 7:{i} / /run/ibi/lower/{i} {how},relatime shared:{i} - "
                     f"{fs} /dev/loop{i} {how}")
    lowers = (",".join(f"lowerdir+={i}" for i in range(n, 0, -1)) if plus
              else "lowerdir=" + ":".join(str(i) for i in range(n, 0, -1)))
    lines.insert(1, f"30 1 0:40 / / rw,relatime shared:1 - overlay ibi rw{root_opts},"
                    f"{lowers},upperdir={UPPER},workdir=/run/ibi/data/layer/work,"
                    "redirect_dir=off,uuid=on")
    lines.append("40 30 8:2 /home /home rw,relatime - ext4 /dev/vda2 rw")
    return "\n".join(lines) + "\n"


def protect(tmp: Path, info: str, mode: str = "normal roottab"
            ) -> tuple[int, list[str], str]:
    (tmp / "mountinfo").write_text(info)
    (tmp / "mode").write_text(mode + "\n")
    env = {"PATH": "/usr/bin:/bin", "IBI_MOUNTINFO": str(tmp / "mountinfo"),
           "IBI_MODE_FILE": str(tmp / "mode"), "IBI_CONSOLE": str(tmp / "console"),
           "IBI_KMSG": str(tmp / "kmsg")}
    r = subprocess.run([SH, str(SCRIPT)], capture_output=True, text=True, env=env,
                       timeout=60)
    console = (tmp / "console").read_text() if (tmp / "console").exists() else ""
    return r.returncode, r.stdout.splitlines(), console


@pytest.mark.parametrize("plus", [False, True], ids=["lowerdir", "lowerdir+="])
def test_a_sound_stack_passes(tmp_path: Path, plus: bool) -> None:
    rc, out, console = protect(tmp_path, mountinfo(101 if plus else 20, plus=plus))
    assert (rc, console) == (0, "")
    assert out == [f"ibi: protection check passed (normal roottab; {101 if plus else 20} "
                   "image(s) read-only below /)"]


@pytest.mark.parametrize("plus", [False, True], ids=["lowerdir", "lowerdir+="])
def test_each_problem_is_named(tmp_path: Path, plus: bool) -> None:
    info = mountinfo(101, plus=plus, rw=7, missing=50, not_squashfs=7)
    rc, out, console = protect(tmp_path, info)
    assert rc == 1
    assert out == ["ibi: WARNING: image /run/ibi/lower/7 is WRITABLE: it must be mounted "
                   "read-only",
                   "ibi: WARNING: image /run/ibi/lower/7 is not squashfs",
                   "ibi: WARNING: image /run/ibi/lower/50 is not a mount of its own"]
    assert console.splitlines() == [ln for ln in out]
    assert (tmp_path / "kmsg").read_text().splitlines() == [f"<4>{ln}" for ln in out]


def test_unsafe_overlay_options_and_another_upper(tmp_path: Path) -> None:
    info = mountinfo(3, plus=False, root_opts=",metacopy=on").replace(
        f"upperdir={UPPER}", "upperdir=/somewhere/else")
    rc, out, _ = protect(tmp_path, info)
    assert rc == 1
    assert out == ["ibi: WARNING: / uses metacopy=on: the writable layer could not be "
                   "squashed safely",
                   "ibi: WARNING: the writable layer is /somewhere/else, not "
                   f"{UPPER}"]


def test_not_an_overlay_root(tmp_path: Path) -> None:
    rc, out, _ = protect(tmp_path, "30 1 8:1 / / rw,relatime - ext4 /dev/vda1 rw\n")
    assert rc == 1
    assert out == ["ibi: WARNING: / is 'ext4', not ibi's overlay: this system is NOT "
                   "protected by ibi"]


def test_a_live_review_says_so_on_the_console(tmp_path: Path) -> None:
    rc, out, console = protect(tmp_path, mountinfo(4, plus=False).replace(
        UPPER, "/run/ibi/review/upper"), mode="review p3")
    assert rc == 0 and out[-1].startswith("ibi: protection check passed (review p3; 4 ")
    assert console == "ibi: LIVE REVIEW (p3): changes live in RAM and are lost at shutdown\n"
