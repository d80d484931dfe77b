"""The initramfs side of ibi on the machine a user installs: each scenario boots a copy of
the installed disk (tests/vm/installed.py: the conventional Debian disk, the package from
dpkg, ``ibi install``) through GRUB, after changing its data partition on the host to the
state the scenario needs (a deep stack, a corrupt roottab, files in the writable layer).
Every boot's time is printed and appended to ``<logs>/boot-times.txt``.

    sudo python3 -m pytest -m vm tests/vm -v -s
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from qemu import BOOT_TIMEOUT, VM, Console

pytestmark = pytest.mark.vm

Scenario = Callable[..., VM]
MENU_READY = "Continue booting"
MAINTENANCE = "Maintenance Mode"


def plant(data: Path, rel: str, text: str, mode: int = 0o644) -> None:
    """Write a file into the data directory (creating parents like the base has them)."""
    path = data / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def upper_root(data: Path) -> Path:
    root = data / "layer/upper/root"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    return root


def mount_field(vm: VM, field: str, target: str = "/") -> str:
    return vm.check(f"findmnt -n -r -o {field} --mountpoint {target} | cat")


def lowerdirs(vm: VM) -> list[str]:
    """The lowers of /, top first, as paths (ibi passes them relative to /run/ibi/lower, as
    one lowerdir= list or, for a deep stack, one lowerdir+= each)."""
    opts = mount_field(vm, "OPTIONS")
    m = re.search(r"lowerdir=([^,]+)", opts)
    names = m.group(1).split(":") if m else re.findall(r"lowerdir\+=([^,]+)", opts)
    assert names, f"no lowerdir in the options of /: {opts}"
    return [p if p.startswith("/") else f"/run/ibi/lower/{p}" for p in names]


def lower_images(vm: VM) -> list[str]:
    """The image names behind the lowers of /, top first (from the loop backing files),
    read in one command."""
    dirs = " ".join(lowerdirs(vm))
    out = vm.check(f"for d in {dirs}; do losetup -n -O BACK-FILE "
                   "\"$(findmnt -n -r -o SOURCE --mountpoint $d)\"; done | cat", timeout=300)
    return [Path(line.strip()).name.removesuffix(".sqfs") for line in out.splitlines()]


def assert_protected(vm: VM, upper: str) -> None:
    assert mount_field(vm, "FSTYPE") == "overlay"
    opts = mount_field(vm, "OPTIONS")
    assert f"upperdir={upper}" in opts, opts
    # every mount in one command (a hundred images: a findmnt each took minutes under TCG)
    table = {}
    for line in vm.check("findmnt -n -r -o TARGET,FSTYPE,OPTIONS | cat",
                         timeout=300).splitlines():
        target, fstype, options = line.split(" ", 2)
        table[target] = (fstype, options.split(","))
    for lower in lowerdirs(vm):
        assert lower in table, f"{lower} is not a mount"
        assert table[lower][0] == "squashfs", (lower, table[lower])
        assert "ro" in table[lower][1], (lower, table[lower])


# --- scenario 1 ------------------------------------------------------------------------

LONG = [f"restore-point-{i}-with-a-long-descriptive-name-{'x' * 16}" for i in range(8)]
DEEP = [*LONG, *(f"p{i}" for i in range(92))]


def deep_stack(data: Path) -> None:
    """100 incremental restore points on the base: 8 with 61-character names (as absolute
    paths their lowerdir= would be over 600 bytes, which Debian 13's mount refuses), made
    by the engine, then 92 more squashed the way create squashes a layer (a create mounts
    the whole stack: a hundred of them take minutes): "101:100:...:1" is over 255 bytes,
    so the initramfs mounts one lowerdir+= per image."""
    import stat

    from maintenance import squash
    from maintenance.engine import Engine
    from maintenance.model import Kind

    eng = Engine(data, data.parent / "run")
    for i, name in enumerate(LONG):
        plant(data, f"layer/upper/root/deep-{i}.txt", f"{i}\n")
        eng.create(Kind.INCREMENTAL, name=name, level=1)
    tab = eng.roottab()
    layers = data.parent / "deep-layers"
    for name in DEEP[len(LONG):]:
        layer = layers / name
        (layer / "root").mkdir(parents=True, mode=0o700)
        (layer / "root" / f"{name}.txt").write_text(f"{name}\n")
        if name == "p50":  # a deletion too: p49's file
            os.mknod(layer / "root/p49.txt", stat.S_IFCHR, os.makedev(0, 0))
        tmp = eng.store.tmp_path(name, ".sqfs")
        squash.mksquashfs(layer, tmp)
        eng._commit_image(tmp, name, Kind.INCREMENTAL, "", tuple(tab), tab[-1], "zstd", None)
        tab.append(name)
    eng.store.write_roottab(tab)
    eng.refresh_boot_files()
    # The guest's own setting, not ibi's: under emulation, with a hundred loop devices for
    # udev to go through first, /dev/ttyS0 came after systemd's 90 s device timeout, and
    # the serial getty (the tests' shell) gave up: wait for it as long as the boot may take.
    plant(data, "layer/upper/etc/systemd/system/dev-ttyS0.device.d/ibi-vm-test.conf",
          f"[Unit]\nJobTimeoutSec={2 * BOOT_TIMEOUT}\n"
          f"JobRunningTimeoutSec={2 * BOOT_TIMEOUT}\n")


def test_normal_boot_is_overlay_and_persists(scenario: Scenario) -> None:
    vm = scenario("first", plant=deep_stack)
    # a hundred images under TCG: the loop devices, then every lookup through 101 layers
    vm.start()
    vm.wait_for_shell(timeout=2 * BOOT_TIMEOUT)
    assert vm.check("cat /run/ibi/mode") == "normal roottab"
    assert_protected(vm, "/run/ibi/data/layer/upper")
    assert lowerdirs(vm) == [f"/run/ibi/lower/{n}" for n in range(101, 0, -1)]
    assert "lowerdir+=101,lowerdir+=100," in mount_field(vm, "OPTIONS")
    assert lower_images(vm) == [*reversed(DEEP), "base"]
    assert vm.check("cat /root/deep-0.txt /root/deep-7.txt /root/p0.txt /root/p91.txt"
                    ).split() == ["0", "7", "p0", "p91"]
    assert vm.run("test -e /root/p49.txt")[0] == 1
    assert vm.check("systemctl is-active ibi-protect.service") == "active"
    assert "protection check passed" in vm.check("journalctl -b -u ibi-protect --no-pager | cat")
    assert mount_field(vm, "SOURCE", "/home").endswith("[/home]")
    status = vm.check("ibi status --data /run/ibi/data", timeout=180)
    assert "base" in status
    vm.check("echo persisted > /root/persist.txt && echo mine > /home/file.txt && sync")
    assert vm.check("cat /run/ibi/data/layer/upper/root/persist.txt") == "persisted"
    # the running system cannot squash its own layer: queue it for the next boot
    out = vm.check("ibi create --incremental --next-boot --name queued-at-runtime "
                   "--data /run/ibi/data 2>&1", timeout=180)
    assert "at the next boot" in out
    vm.check("sync")
    vm.poweroff()

    vm = scenario("second")
    # this boot first makes the queued restore point of a 101-image stack in the
    # initramfs (its view mounts every image: 150-250 s under TCG), then mounts 102
    vm.start()
    vm.wait_for_shell(timeout=2 * BOOT_TIMEOUT)
    assert vm.check("cat /root/persist.txt") == "persisted"
    assert vm.check("cat /home/file.txt") == "mine"
    # the queued action ran in the initramfs: the file now lives in the new top image
    assert lower_images(vm)[0] == "queued-at-runtime"
    assert vm.run("test -e /run/ibi/data/layer/upper/root/persist.txt")[0] == 1
    assert vm.run("test -e /run/ibi/data/.root_images/pending")[0] == 1
    assert "the queued action is done" in vm.check("journalctl -b --no-pager -o cat | cat")
    vm.poweroff()


# --- scenario 5 ------------------------------------------------------------------------

@pytest.mark.vm_long
def test_corrupt_roottab_falls_back_to_prev(scenario: Scenario) -> None:
    def corrupt(data: Path) -> None:
        store = data / ".root_images"
        (store / "roottab.prev").write_bytes((store / "roottab").read_bytes())
        (store / "roottab").write_bytes(b"\x00\xff\xfe garbage: not a roottab !!\nbase\n")

    vm = scenario("fallback", plant=corrupt)
    vm.expect("falling back to roottab.prev", timeout=BOOT_TIMEOUT)
    vm.boot()
    assert vm.check("cat /run/ibi/mode") == "normal roottab.prev"
    assert_protected(vm, "/run/ibi/data/layer/upper")
    journal = vm.check("journalctl -b --no-pager -o cat | grep 'ibi:' | cat")
    assert "PREVIOUS stack" in journal
    # roottab changed behind the boot plan: the image's own ibi renewed the plan first (the
    # initramfs logs to the kernel's ring buffer)
    assert "the boot plan is missing or older than roottab: renewing it" in vm.check(
        "dmesg | grep 'ibi:' | cat")
    assert vm.check("ibi boot-entries --data /run/ibi/data | grep -c '^normal' || true") == "0"
    vm.poweroff()


# --- scenarios 2 and 3: the maintenance menu in the initramfs ---------------------------

def open_menu(vm: VM) -> Console:
    con = Console(vm)
    con.wait_for(MENU_READY, timeout=BOOT_TIMEOUT)
    con.pump(2)
    return con


def test_maintenance_create_incremental_then_continue(scenario: Scenario) -> None:
    def layer_file(data: Path) -> None:
        plant(data, "layer/upper/root/inc-marker.txt", "squash me\n")
        upper_root(data)

    vm = scenario("maint", choose=MAINTENANCE, plant=layer_file)  # GRUB's own entry
    con = open_menu(vm)
    assert "Image stack" in con.text() and "base" in con.text(), con.text()
    con.keys("i")
    con.wait_for("Description", timeout=60)
    con.keys("vm test\r")
    con.wait_for("Restore point created", timeout=600)
    con.keys("\r")
    con.wait_for(MENU_READY, timeout=120)
    con.keys("c")
    vm.wait_for_shell()
    tab = vm.check("grep -v '^#' /run/ibi/data/.root_images/roottab")
    names = tab.split()
    assert len(names) == 2 and names[0] == "base", tab
    assert lower_images(vm) == [names[1], "base"]
    assert_protected(vm, "/run/ibi/data/layer/upper")
    assert vm.check("cat /root/inc-marker.txt") == "squash me"
    assert vm.run("test -e /run/ibi/data/layer/upper/root/inc-marker.txt")[0] == 1
    vm.poweroff()


# --- no black screen: an unbootable store opens the menu with the error --------------------

@pytest.mark.vm_long
def test_unbootable_store_opens_the_menu_with_the_error(scenario: Scenario) -> None:
    """The top image of roottab has one byte changed (its size and superblock intact, so
    only rd.ibi.verify=sha256 sees it) and roottab.prev is gone: the image is refused with
    its reason in one line, and the menu opens from the base alone, whose SHA-256 matched."""
    def break_both(data: Path) -> None:
        import dataclasses

        from maintenance import bootloader, bootplan
        from maintenance.engine import Engine
        from maintenance.model import Kind
        from maintenance.store import Store

        plant(data, "layer/upper/root/damaged.txt", "squashed, then damaged\n")
        Engine(data, data.parent / "run").create(Kind.INCREMENTAL, name="damaged", level=1)
        st = Store(data)
        image = st.image_path("damaged")
        with image.open("r+b") as f:  # one byte past the superblock
            f.seek(image.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        st.roottab_prev_path.unlink(missing_ok=True)
        s = bootloader.read_settings(st)
        bootloader.write_settings(st, dataclasses.replace(
            s, cmdline=f"{s.cmdline} rd.ibi.verify=sha256".strip()))
        bootplan.write(st)
        bootloader.write_grub_cfg(st)

    vm = scenario("broken", plant=break_both)  # the default entry, not Maintenance Mode
    con = open_menu(vm)
    assert "the boot failed" in con.text(), con.text()
    con.keys("o", settle=0)  # Power off: the decision ends the boot
    vm.expect_exit(timeout=180)
    assert vm.log_path is not None
    log = vm.log_path.read_text(errors="replace")
    assert re.search(r"\nibi: image 'damaged' refused: SHA-256 [0-9a-f]{64}, its metadata "
                     r"says [0-9a-f]{64}\r*\n", log), "no one-line reason on the console"
    assert "falling back to roottab.prev" in log  # the fallback chain, then the menu


# --- Restore System, then Live Review, chosen in one visit of the menu -------------------

def test_maintenance_restore_then_live_review(scenario: Scenario) -> None:
    """One boot into Maintenance Mode: Restore System discards the damaged layer (keeps
    /home), the menu comes back, and Live Review of the base boots it on a tmpfs."""
    def damage(data: Path) -> None:
        plant(data, "layer/upper/etc/motd", "DAMAGED\n")
        plant(data, "layer/upper/etc/ibi-damage", "broken config\n")
        plant(data, "layer/upper/root/layer-marker.txt", "in the layer\n")
        upper_root(data)
        plant(data, "home/keep.txt", "my work\n")

    vm = scenario("maint", choose=MAINTENANCE, plant=damage)
    con = open_menu(vm)
    con.keys("r")
    con.wait_for("Type RESTORE", timeout=300)
    con.keys("RESTORE\r")
    con.wait_for("System restored", timeout=600)
    con.keys("\r")
    con.wait_for(MENU_READY, timeout=300)
    con.keys("l")
    con.wait_for("Live Review", timeout=120)
    con.wait_for("newest first", timeout=120)
    con.keys("\r")
    con.wait_for("Boot into Live Review", timeout=120)
    con.keys("\r")
    vm.wait_for_shell()
    assert vm.check("cat /run/ibi/mode") == "review base"
    assert_protected(vm, "/run/ibi/review/upper")
    # the restore: the layer on the data partition is a fresh one; /home kept
    for gone in ("etc/ibi-damage", "etc/motd", "root/layer-marker.txt"):
        assert vm.run(f"test -e /run/ibi/data/layer/upper/{gone}")[0] == 1, gone
    assert vm.run("test -e /etc/ibi-damage")[0] == 1
    assert "DAMAGED" not in vm.run("cat /etc/motd")[1]
    assert vm.check("cat /home/keep.txt") == "my work"
    assert vm.run("ls -d /run/ibi/data/trash/*")[0] == 0  # the old layer, set aside
    # the review's tmpfs: half of MemAvailable then (not the kernel's half of the RAM)
    m = re.search(r"the Live Review's tmpfs: (\d+) KiB \(half of MemAvailable (\d+) kB\)",
                  vm.check("dmesg | grep 'ibi:' | cat"))
    assert m, "the initramfs did not log the review tmpfs's size"
    kib, avail = int(m.group(1)), int(m.group(2))
    assert kib == max(avail // 2, 65536) // 4 * 4
    assert int(vm.check("findmnt -n -b -o SIZE --mountpoint /run/ibi/review")) == kib * 1024
    total = int(vm.check("awk '/^MemTotal:/ {print $2}' /proc/meminfo"))
    assert avail <= total and kib < total // 2
    vm.poweroff()
