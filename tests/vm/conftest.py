"""Fixtures of the VM tests: the guest (built or taken from the cache) and booted VMs.

The tests skip, with the reason printed, only when qemu or mmdebstrap is truly missing or
the run is not root; under IBI_REQUIRE_ALL=1 (CI) that is a failure instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guest as guestmod
import qemu
from installed import installed_disk, planted_disk


def _unavailable() -> str | None:
    if os.geteuid() != 0:
        return "the VM tests need root (mmdebstrap --mode=root, chroot for dracut)"
    missing = guestmod.missing_tools()
    if missing:
        return (f"missing host tools: {', '.join(missing)} "
                "(apt-get install mmdebstrap qemu-system-x86 qemu-utils squashfs-tools)")
    return qemu.qemu_missing()


def _skip(reason: str) -> None:
    if os.environ.get("IBI_REQUIRE_ALL") == "1":
        pytest.fail(f"required for the VM tests: {reason}")
    print(f"SKIP vm tests: {reason}", flush=True)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vm_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vm")


@pytest.fixture(scope="session")
def guest(vm_workdir: Path) -> guestmod.Guest:
    reason = _unavailable()
    if reason:
        _skip(reason)
    g = guestmod.build_guest(vm_workdir)
    print(f"\n[vm] guest build timings: {g.timings}", flush=True)
    return g


def _finish(vms: list[qemu.VM], logs: Path, request: pytest.FixtureRequest) -> None:
    """Kill the test's VMs; keep their console logs under <logs>/failed if it failed."""
    for vm in vms:
        vm._kill()
    if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
        for vm in vms:
            if vm.log_path:
                keep = logs / "failed"
                keep.mkdir(exist_ok=True)
                shutil.copy2(vm.log_path, keep / vm.log_path.name)


@pytest.fixture(scope="session")
def installed(guest: guestmod.Guest, vm_workdir: Path) -> tuple[Path, dict[str, object]]:
    out, record = installed_disk(vm_workdir / "logs")
    print(f"\n[vm] installed disk: {out}\n[vm] ibi install --dry-run in the guest:\n"
          f"{record['dry_run']}\n[vm] install timings: "
          f"{ {k: v for k, v in record.items() if k.endswith('_s')} }", flush=True)
    return out, record


@pytest.fixture
def scenario(installed: tuple[Path, dict[str, object]], vm_workdir: Path,
             request: pytest.FixtureRequest) -> Iterator[Callable[..., qemu.VM]]:
    """scenario(name, choose=None) -> a started VM booting the scenario's copy of the
    installed disk through GRUB (the same disk for every call of one test); ``choose`` picks
    a GRUB entry by its title (else the default boots)."""
    logs = Path(os.environ.get("IBI_VM_LOGS", vm_workdir / "logs"))
    disks: list[Path] = []
    vms: list[qemu.VM] = []

    def start(name: str, choose: str | None = None, menu: list[str] | None = None,
              drives: tuple[Path, ...] = (),
              plant: Callable[[Path], None] | None = None) -> qemu.VM:
        """``menu``: a list that receives GRUB's entry titles (no key is pressed);
        ``drives``: more disks (vdb, ...), e.g. a transfer disk; ``plant(D)``: (first call
        only) change the data partition, mounted on D on the host, before the first boot."""
        if not disks:
            if plant is not None:
                disks.append(planted_disk(installed[0],
                                          vm_workdir / f"{request.node.name}.raw", plant))
            else:
                disks.append(vm_workdir / f"{request.node.name}.qcow2")
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                                "-b", str(installed[0]), str(disks[0])], check=True)
        else:
            assert plant is None, "plant applies before the first boot of a scenario"
        disk = disks[0]
        if choose:
            def pick(vm: qemu.VM) -> None:
                qemu.grub_choose(vm, choose)
        elif menu is not None:
            def pick(vm: qemu.VM) -> None:
                menu.extend(qemu.grub_menu(vm))
        else:
            pick = None  # type: ignore[assignment]
        vm = qemu.VM(None, None, disk, logs, f"{request.node.name}-{name}",
                bootloader=pick, drives=drives)
        vms.append(vm)
        vm.start()
        return vm

    yield start
    _finish(vms, logs, request)
    for d in disks:  # a raw copy is most of a GiB
        d.unlink(missing_ok=True)


_reported = 0  # how many of qemu.BOOT_TIMES went out with a report already


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the item (for _finish), and hands the boots of the test
    (and of any cache build it waited for) to its teardown report, which reaches the main
    process also from a pytest-xdist worker."""
    global _reported
    outcome: Any = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.when == "teardown" and len(qemu.BOOT_TIMES) > _reported:
        rep.user_properties.append(("vm_boot_times", qemu.BOOT_TIMES[_reported:]))
        _reported = len(qemu.BOOT_TIMES)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Every boot's time, also when pytest captured the output or ran in workers."""
    times = [t for reps in terminalreporter.stats.values() for rep in reps
             for key, value in getattr(rep, "user_properties", ())
             if key == "vm_boot_times" for t in value]
    if times:
        terminalreporter.section("vm boot times (qemu start to root shell)")
        for name, seconds in times:
            terminalreporter.write_line(f"{seconds:7.1f} s  {name}")
