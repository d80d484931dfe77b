"""Fast checks of the boot side that need no VM: the shell library of the dracut module run
under /bin/sh against a store in a temporary directory, shellcheck, and the agreement of
the overlay options with the engine."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from maintenance import bootloader, bootplan
from maintenance.engine import Engine
from maintenance.errors import IbiError
from maintenance.model import ImageMeta, Kind
from maintenance.store import Store

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "dracut-module/90ibi/ibi-lib.sh"
SHELL_FILES = sorted([*ROOT.glob("dracut-module/90ibi/*.sh"), *ROOT.glob("systemd/*.sh"),
                      *ROOT.glob("dracut-module/kernel/*")])

# what dracut-lib.sh provides, reduced to what ibi-lib.sh uses
STUBS = """
getarg() { return 1; }
ismounted() { return 1; }
label_uuid_to_dev() { echo "/dev/disk/by-label/${1#LABEL=}"; }
"""


def test_overlay_options_match_the_engine() -> None:
    from maintenance.mounts import OVERLAY_OPTIONS

    m = re.search(r'^IBI_OVERLAY_OPTIONS="([^"]*)"', LIB.read_text(), re.M)
    assert m, "ibi-lib.sh does not define IBI_OVERLAY_OPTIONS"
    assert m.group(1) == OVERLAY_OPTIONS


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", "-x", "-s", "sh", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def lib(data: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in /bin/sh with ibi-lib.sh sourced and IBI_DATA pointing at ``data``."""
    text = f"{STUBS}\nIBI_LIBDIR={LIB.parent}\n. {LIB}\nIBI_DATA={data}\n{script}\n"
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True)


def meta(name: str, kind: str, stack: tuple[str, ...] = (), day: int = 1) -> ImageMeta:
    return ImageMeta(name=name, kind=Kind(kind), created=dt.datetime(2026, 1, day, 10, 0,
                     tzinfo=dt.UTC), sha256="0" * 64, size=4, stack=stack,
                     parent=stack[-1] if stack and kind == "incremental" else None)


def store(tmp_path: Path, metas: list[ImageMeta], roottab: str, prev: str | None = None,
          missing: tuple[str, ...] = ()) -> Store:
    """A store as the engine writes it (images are stand-ins: the shell only checks that
    they exist), with its boot plan written by the engine."""
    st = Store(tmp_path)
    st.root.mkdir()
    for m in metas:
        st.write_meta(m)
        if m.name not in missing:
            st.image_path(m.name).write_bytes(b"hsqs")
    st.roottab_path.write_text(roottab)
    if prev is not None:
        st.roottab_prev_path.write_text(prev)
    bootplan.write(st)
    return st


def plan_stack(st: Store, kind: str, name: str = "") -> tuple[int, str]:
    r = lib(st.data, f'ibi_plan_stack {kind} {name} && echo "$IBI_NAMES" || '
                     '{ echo "ERR $IBI_ERROR"; exit 1; }')
    return r.returncode, r.stdout.strip()


def menu_stacks(st: Store) -> list[str]:
    return lib(st.data, "ibi_plan_stacks menu").stdout.splitlines()


STORE = [
    meta("base", "base", day=1),
    meta("inc1", "incremental", ("base",), day=2),
    meta("inc2", "incremental", ("base", "inc1"), day=3),
    meta("old", "incremental", ("base",), day=4),
    meta("full1", "full", ("base", "inc1"), day=5),
    meta("orphan", "incremental", ("gone",), day=6),
]


def test_shell_and_engine_agree_on_every_stack(tmp_path: Path) -> None:
    """The same store through the engine (Engine.stack_for, roottab) and through the shell
    (the boot plan): every Live Review, the normal stack, the fallback and the menu."""
    st = store(tmp_path, STORE, "# comment\n\n  base  # bottom\n\tinc1\ninc2\n",
               prev="base\ninc1\n")
    eng = Engine(st.data, tmp_path / "run")
    assert plan_stack(st, "normal") == (0, " ".join(eng.roottab()))
    assert plan_stack(st, "fallback") == (0, " ".join(st.read_roottab(prev=True)))
    for name in ("base", "inc1", "inc2", "old", "full1"):
        assert plan_stack(st, "review", name) == (0, " ".join(eng.stack_for(name))), name
    for name in ("orphan", "nope"):
        with pytest.raises(IbiError):
            eng.stack_for(name)
        rc, out = plan_stack(st, "review", name)
        assert rc == 1 and f"no restore point named '{name}'" in out
    # the menu runs from the active stack first, then the fallback, then any base or full
    assert menu_stacks(st) == ["base inc1 inc2", "base inc1", "full1", "base"]
    assert lib(st.data, "ibi_plan_current").returncode == 0


def test_plan_is_stale_when_roottab_changes_behind_it(tmp_path: Path) -> None:
    st = store(tmp_path, STORE, "base\ninc1\n")
    assert lib(st.data, "ibi_plan_current").returncode == 0
    st.roottab_path.write_text("base\n")  # edited by hand, or a power cut before the plan
    assert lib(st.data, "ibi_plan_current").returncode == 1
    assert not bootplan.is_current(st)
    bootplan.write(st)
    assert lib(st.data, "ibi_plan_current").returncode == 0
    assert plan_stack(st, "normal") == (0, "base")


def test_cksum_matches_posix_cksum(tmp_path: Path) -> None:
    for text in (b"", b"base\n", b"# x\n" * 1000, bytes(range(256))):
        f = tmp_path / "f"
        f.write_bytes(text)
        out = subprocess.run(["cksum"], stdin=f.open("rb"), capture_output=True,
                             text=True, check=True).stdout.split()
        assert bootplan.posix_cksum(text) == (int(out[0]), int(out[1]))


@pytest.mark.parametrize(("roottab", "missing", "error"), [
    ("base\nmissing\n", (), "roottab is unusable"),
    ("# only a comment\n\n", (), "roottab is unusable"),
    ("base\nbad name\n", (), "roottab is unusable"),
    ("base\ninc1\n", ("inc1",), "roottab is unusable"),
])
def test_unusable_roottab_has_no_normal_stack(tmp_path: Path, roottab: str,
                                              missing: tuple[str, ...], error: str) -> None:
    st = store(tmp_path, STORE[:2], roottab, prev="base\n", missing=missing)
    rc, out = plan_stack(st, "normal")
    assert rc == 1 and error in out, out
    assert plan_stack(st, "fallback") == (0, "base")


def test_image_removed_after_the_plan_is_refused(tmp_path: Path) -> None:
    st = store(tmp_path, STORE[:2], "base\ninc1\n")
    st.image_path("inc1").unlink()
    rc, out = plan_stack(st, "normal")
    assert rc == 1 and "image 'inc1' is missing" in out


def test_grub_menu_from_the_plan(tmp_path: Path) -> None:
    st = store(tmp_path, STORE[:3], "base\ninc1\ninc2\n")
    bootloader.write_settings(st, bootloader.Settings(
        data_spec="UUID=1234", data_fs_uuid="1234", kernel="6.12.7-amd64",
        cmdline="console=ttyS0,115200", terminal="serial --unit=0 --speed=115200",
        original=bootloader.Original("/dev/vda1", "abcd", "/boot/grub/grub.cfg")))
    eng = Engine(st.data, tmp_path / "run")
    assert eng.refresh_boot_files()
    out = bootloader.cfg_path(st).read_text()
    titles = re.findall(r"menuentry '([^']*)'", out)
    assert titles == ["Debian GNU/Linux (ibi: 3 images, top inc2)",
                      "Debian GNU/Linux (ibi Maintenance Mode)",
                      "ibi Live Review of inc2 (incremental, 2026-01-03 10:00 UTC)",
                      "ibi Live Review of inc1 (incremental, 2026-01-02 10:00 UTC)",
                      "ibi Live Review of base (base, 2026-01-01 10:00 UTC)",
                      "Original system on /dev/vda1 (before ibi install)"], out
    assert ("linux /boot/vmlinuz-6.12.7-amd64 rd.ibi.data=UUID=1234 console=ttyS0,115200 "
            "rd.ibi.maintenance") in out
    assert "rd.ibi.review=inc1" in out and "initrd /boot/initrd.img-6.12.7-amd64" in out
    assert "--id ibi-review-inc1 --class recovery" in out
    assert "configfile /boot/grub/grub.cfg" in out and "set default=ibi" in out
    assert not eng.refresh_boot_files()  # unchanged: not rewritten
    if shutil.which("grub-script-check"):
        r = subprocess.run(["grub-script-check", str(bootloader.cfg_path(st))],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_plan_without_a_final_newline_and_without_a_plan(tmp_path: Path) -> None:
    st = store(tmp_path, STORE[:2], "base\ninc1\n")
    plan = bootplan.path(st)
    plan.write_text(plan.read_text().rstrip("\n"))  # the last line ends without a newline
    assert plan_stack(st, "review", "base") == (0, "base")
    plan.unlink()  # a store from before boot plans: the menu tries each image alone
    assemble = ROOT / "dracut-module/90ibi/ibi-assemble.sh"
    funcs = assemble.read_text().rsplit("case $1 in", 1)[0]
    r = subprocess.run(["sh", "-c", f"{STUBS}\nIBI_LIBDIR={LIB.parent}\n. {LIB}\n"
                        f"IBI_DATA={st.data}\n"
                        + funcs.split(". /usr/lib/ibi/ibi-lib.sh", 1)[1] + "\nmenu_stacks"],
                       capture_output=True, text=True)
    assert r.stdout.split() == ["base", "inc1"], r.stderr


def test_a_broken_store_file_never_blocks_the_engine(tmp_path: Path) -> None:
    st = store(tmp_path, STORE[:2], "base\ninc1\n")
    st.bootloader_conf.parent.mkdir()
    st.bootloader_conf.write_text("kernel: [unclosed\n")  # GRUB's settings damaged
    bootplan.path(st).write_bytes(b"\xff\xfe not text")  # the plan damaged
    eng = Engine(st.data, tmp_path / "run")
    assert "renew the boot plan" in eng.recover()  # the plan is renewed, GRUB's skipped
    assert bootplan.is_current(st)
    st.meta_path("inc1").write_text(st.meta_path("inc1").read_text().replace(
        "- base", "- {a: 1}"))  # ill-typed metadata: one line, not a traceback
    with pytest.raises(IbiError, match=r"inc1\.yaml: unreadable metadata"):
        st.read_meta("inc1")


def test_grub_menu_quotes_odd_kernel_parameters(tmp_path: Path) -> None:
    st = store(tmp_path, STORE[:1], "base\n")
    bootloader.write_settings(st, bootloader.Settings(
        data_spec="UUID=1234", data_fs_uuid="1234", kernel="6.12.7-amd64",
        cmdline="quiet a;b c'd #e f}g $h", distributor="Debian 'GNU' {Linux}"))
    assert bootloader.write_grub_cfg(st)
    out = bootloader.cfg_path(st).read_text()
    assert "rd.ibi.data=UUID=1234 quiet 'a;b' 'c'\\''d' '#e' 'f}g' '$h'" in out, out
