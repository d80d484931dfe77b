"""Shared fixtures. Tests that mount run as root inside a private mount namespace that the
test process enters once (so nothing leaks into the host's mount table); they skip with a
printed reason elsewhere, and under IBI_REQUIRE_ALL=1 (set by .ci/run) a missing
capability fails instead of skipping."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

# A create through the CLI or the menu starts `ibi reclaim` in the background; in the tests'
# mount namespaces such a process could outlive the test and keep its mounts busy, so the
# tests defer it as the initramfs does (tests/test_reclaim.py runs the background path).
os.environ["IBI_RECLAIM"] = "later"

CLONE_NEWNS = 0x00020000
_ns_ready: bool | None = None
_ns_reason = ""


def _enter_private_namespace() -> bool:
    global _ns_ready, _ns_reason
    if _ns_ready is not None:
        return _ns_ready
    _ns_ready = False
    if os.geteuid() != 0:
        _ns_reason = "needs root (loop devices, overlayfs, squashfs)"
        return False
    missing = [t for t in ("mksquashfs", "unsquashfs", "losetup") if not shutil.which(t)]
    if missing:
        _ns_reason = f"missing tools: {', '.join(missing)} (apt-get install squashfs-tools)"
        return False
    fs = Path("/proc/filesystems").read_text()
    for need in ("overlay", "squashfs"):
        if need not in fs:
            subprocess.run(["modprobe", need], capture_output=True)
    fs = Path("/proc/filesystems").read_text()
    if "overlay" not in fs or "squashfs" not in fs:
        _ns_reason = "the kernel lacks overlay or squashfs"
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        _ns_reason = f"unshare(CLONE_NEWNS) failed: {os.strerror(ctypes.get_errno())}"
        return False
    # Keep this namespace's mounts from propagating back to the host. Where / is not a
    # mount point (a chroot, some containers) make every visible mount private instead.
    if subprocess.run(["mount", "--make-rprivate", "/"], capture_output=True).returncode:
        mps = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()]
        for mp in mps:
            subprocess.run(["mount", "--make-private", mp], capture_output=True)
        print("\nconftest: / is not a mount point here; made each visible mount private")
    _ns_ready = True
    return True


def require_root() -> None:
    if not _enter_private_namespace():
        if os.environ.get("IBI_REQUIRE_ALL") == "1":
            pytest.fail(f"required capability missing: {_ns_reason}")
        pytest.skip(_ns_reason)


def loop_devices() -> set[str]:
    out = subprocess.run(["losetup", "-a", "-n", "-O", "NAME,BACK-FILE"], capture_output=True,
                         text=True).stdout
    return {ln.strip() for ln in out.splitlines() if ln.strip()}


@pytest.fixture
def root_ns(tmp_path: Path) -> Iterator[Path]:
    """Root in a private mount namespace; checks afterwards that the test left no mount
    under tmp_path and no loop device behind."""
    require_root()
    loops = loop_devices()
    yield tmp_path
    leaked = [ln.split()[4] for ln in Path("/proc/self/mountinfo").read_text().splitlines()
              if ln.split()[4].startswith(str(tmp_path))]
    for mp in reversed(leaked):
        subprocess.run(["umount", "-l", mp], capture_output=True)
    new_loops = {ln for ln in loop_devices() - loops if str(tmp_path) in ln}
    assert not leaked, f"mounts leaked: {leaked}"
    assert not new_loops, f"loop devices leaked: {new_loops}"


@pytest.fixture
def engine(root_ns: Path):  # type: ignore[no-untyped-def]
    from maintenance.engine import Engine

    data = root_ns / "data"
    data.mkdir()
    return Engine(data, root_ns / "run")


# The longest VM test files first, so two workers end together (each boots its own qemu).
VM_FIRST = ("test_powercut", "test_fallback", "test_kernel_upgrade", "test_state",
            "test_install", "test_boot")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With pytest-xdist (scripts/test runs ``-n 2 --dist loadgroup``): the tests that do not
    boot a VM form one group that a single worker runs in order (they were written for one
    process: tmux sessions, the demo's paths), while each VM test is a unit of its own for
    any worker; the other worker builds the VM caches meanwhile. The VM tests go longest
    file first."""
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("vm") is None:
            return -1
        name = item.path.stem
        return VM_FIRST.index(name) if name in VM_FIRST else len(VM_FIRST)

    if os.environ.get("IBI_VM_LONG") != "1":
        long = [i for i in items if i.get_closest_marker("vm_long") is not None]
        if long:
            items[:] = [i for i in items if i.get_closest_marker("vm_long") is None]
            config.hook.pytest_deselected(items=long)
            tr = config.pluginmanager.get_plugin("terminalreporter")
            if tr is not None and not hasattr(config, "workerinput"):
                tr.write_line(f"deselected {len(long)} long VM scenarios (vm_long; "
                              "IBI_VM_LONG=1 runs them): "
                              + ", ".join(i.name for i in long), yellow=True)
    items.sort(key=rank)  # stable: the order within a file stays
    for item in items:
        if item.get_closest_marker("vm") is None:
            item.add_marker(pytest.mark.xdist_group("host"))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Name each failure the moment it is reported, in the main process: a run that CI's
    time limit ends prints no summary (and pytest-xdist's workers print nothing)."""
    if not report.failed:
        return
    config = getattr(report, "config", None) or _CONFIG.get("config")
    if config is None or hasattr(config, "workerinput"):
        return
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is None:
        return
    crash = getattr(report.longrepr, "reprcrash", None)
    why = crash.message.splitlines()[0][:200] if crash and crash.message else ""
    tr.write_line(f"\nFAILED {report.nodeid} ({report.when}): {why}", red=True)


_CONFIG: dict[str, pytest.Config] = {}


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG["config"] = config


def pytest_report_header(config: pytest.Config) -> str:
    if os.environ.get("IBI_VM_LONG") == "1":
        return "ibi: the long VM scenarios (vm_long) run too"
    return ("ibi: the long VM scenarios (marked vm_long: the kernel upgrade, the saved "
            "settings, the original system, the broken menu, the corrupt roottab, the "
            "unbootable store) are left out, for CI's time limit: "
            "sudo IBI_VM_LONG=1 scripts/test -m vm runs them")
