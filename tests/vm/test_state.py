"""The owner's configuration survives Restore System, as a user meets it: on the installed
disk (the package from dpkg, ``ibi install``, GRUB on the disk), the hostname is changed
with hostnamectl; the next normal boot captures it (ibi-state-save.service, after
multi-user.target); /etc/hostname is deleted; Maintenance Mode -> Restore System shows, for
/etc/hostname, that it is deleted now and that the captured name will be written; after
RESTORE and Continue booting, /etc/hostname and the running hostname are the name again.

One machine, three boots in sequence (each depends on the one before). The confirmation
screen (80x24, as pyte read it from the serial console) is saved in the logs directory as
``<test>-restore-80x24.txt``; its path is printed.

    sudo python3 -m pytest -m vm tests/vm/test_state.py -v -s
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
import qemu
from qemu import VM, Console

pytestmark = pytest.mark.vm

NAME = "ibi-state-host"  # a valid hostname: hostnamectl sets it as is (no pretty name)
GUEST_NAME = "ibi-guest"  # tests/vm/guest.py's /etc/hostname, in the base image
UNIT = "ibi-state-save.service"
MENU_READY = "Continue booting"
PAGE_DOWN = "\x1b[6~"
_PATH = re.compile(r"(?<![\w.-])/[\w.-]+/[\w./-]+")


def boot_finished(vm: VM) -> None:
    """Wait until the boot's start-up jobs are done: the unit runs after multi-user.target
    (and boot-complete.target), which can be after the autologin shell appears."""
    vm.run("timeout 300 systemctl is-system-running --wait", timeout=330)


def unit_ran(vm: VM) -> str:
    """The unit ran at this boot and succeeded; returns its journal lines of this boot."""
    props = vm.check(f"systemctl show -p ActiveState,Result,ExecMainStatus {UNIT}")
    # a oneshot with RemainAfterExit=yes: active (exited) once it succeeded
    assert set(props.split()) == {"ActiveState=active", "Result=success",
                                  "ExecMainStatus=0"}, props
    return vm.check(f"journalctl -b -u {UNIT} --no-pager -o cat | cat")


def state_list(vm: VM) -> dict[str, Any]:
    out = vm.check("ibi state list --json", timeout=180)
    data: dict[str, Any] = json.loads(out)
    return data


def last_capture(state: dict[str, Any]) -> dict[str, Any]:
    captures = state["captures"]
    assert captures, f"no capture at all: {state}"
    newest: dict[str, Any] = max(captures, key=lambda c: c["id"])  # ids sort by time
    return newest


def captured(capture: dict[str, Any], key: str) -> str | None:
    for v in capture["values"]:
        if v["key"] == key:
            value: str | None = v["value"]
            return value
    raise AssertionError(f"{key} is not in capture {capture['id']}: {capture}")


def path_block(lines: list[str], path: str, value: str) -> list[str]:
    """The screen's lines about ``path`` that show ``value``: from a line naming the path,
    the lines after it up to the next one naming a path or a blank line (the layout is the
    screen's own); [] when no such block is in view."""
    for i, line in enumerate(lines):
        if path not in line:
            continue
        block = [line]
        for nxt in lines[i + 1:i + 4]:
            if not nxt.strip() or _PATH.search(nxt):  # the next path's lines
                break
            block.append(nxt)
        if value in "\n".join(block):
            return block
    return []


def restore_confirmation(con: Console) -> tuple[str, list[str]]:
    """Open Restore System's confirmation and scroll it until /etc/hostname's value now and
    the value to be written are both in view; returns that screen and the path's lines."""
    con.keys("r")
    con.wait_for("Type RESTORE", timeout=300)
    con.pump(2)
    for _ in range(6):
        block = path_block(con.screen.display, "/etc/hostname", NAME)
        if block:
            return con.text(), block
        con.vm.send(PAGE_DOWN)  # at once: a lone ESC would be Esc (cancel)
        con.pump(1.5)  # scrolls the body; the typed word keeps the focus
    raise AssertionError("Restore System's confirmation never showed /etc/hostname with "
                         f"the captured name; the screen:\n{con.text()}\n"
                         f"(log: {con.vm.log_path})")


@pytest.mark.vm_long
def test_hostname_survives_restore_system(scenario: Callable[..., VM],
                                          request: pytest.FixtureRequest) -> None:
    # 1. the installed system: the package enabled the unit, which ran at this boot (its
    #    capture, or the one ibi install made, holds the guest's name); the owner renames it
    vm = scenario("rename")
    vm.boot()
    assert vm.check(f"systemctl is-enabled {UNIT}") == "enabled"
    boot_finished(vm)
    print(f"\n[vm] {UNIT} at the first boot:\n{unit_ran(vm)}", flush=True)
    assert vm.check("ibi state get hostname.name") == GUEST_NAME
    vm.check(f"hostnamectl set-hostname {NAME}")
    assert vm.check("cat /etc/hostname") == NAME
    vm.poweroff()

    # 2. a normal boot: the unit captured the new name; a save now writes nothing new;
    #    then /etc/hostname is deleted, and a save keeps the captured name (a deleted value
    #    is never captured)
    vm = scenario("captured")
    vm.boot()
    assert vm.check("hostname") == NAME
    boot_finished(vm)
    journal = unit_ran(vm)
    print(f"\n[vm] {UNIT} after the rename:\n{journal}", flush=True)
    state = state_list(vm)
    capture = last_capture(state)
    assert captured(capture, "hostname.name") == NAME, capture
    assert capture["reason"] == "boot", capture
    assert vm.check("ibi state get hostname.name") == NAME
    count = len(state["captures"])
    assert vm.check("ibi state save --boot --quiet") == ""  # unchanged: silent, no capture
    assert len(state_list(vm)["captures"]) == count
    vm.check("rm /etc/hostname")
    rc, out = vm.run("ibi state save --boot --quiet 2>&1")
    assert rc == 0, out
    assert vm.check("ibi state get hostname.name") == NAME, out
    print(f"\n[vm] ibi state list after rm /etc/hostname:\n"
          f"{vm.check('ibi state list', timeout=180)}", flush=True)
    vm.poweroff()

    # 3. Maintenance Mode -> Restore System: the confirmation shows /etc/hostname deleted
    #    now and the captured name to be written; RESTORE; Continue booting
    vm = scenario("restore", choose="Maintenance Mode")
    con = Console(vm)
    con.wait_for(MENU_READY, timeout=qemu.BOOT_TIMEOUT)
    con.pump(2)
    screen, block = restore_confirmation(con)
    saved = vm.log_dir / f"{request.node.name}-restore-80x24.txt"
    saved.write_text(screen + "\n")
    print(f"\n[vm] Restore System's confirmation (80x24), saved in {saved}:\n{screen}",
          flush=True)
    text = "\n".join(block)
    assert "deleted" in text and NAME in text, block
    con.keys("RESTORE\r")
    con.wait_for("System restored", timeout=300)
    print(f"\n[vm] the result:\n{con.text()}", flush=True)
    con.keys("\r")
    con.wait_for(MENU_READY, timeout=120)
    con.keys("c")
    vm.wait_for_shell()
    assert vm.check("cat /run/ibi/mode") == "normal roottab"
    assert vm.check("cat /etc/hostname") == NAME
    assert vm.check("hostname") == NAME
    boot_finished(vm)
    unit_ran(vm)
    assert vm.check("ibi state get hostname.name") == NAME
    vm.poweroff()
