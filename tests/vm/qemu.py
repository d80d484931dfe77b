"""Boot the test guest in qemu and drive its serial console with pexpect.

One :class:`VM` is one qemu process (``-no-reboot``: a reboot or poweroff ends it), so a
"reboot" in a test is a new VM on the same disk. Every boot's console goes to its own log
file and its boot time (qemu start to a root shell) is recorded and printed.

TCG is used unless the host CPU advertises vmx/svm (the KVM on these machines cannot run a
stock kernel). qemu 7.2 under TCG now and then oopses before the initramfs runs: such a boot
is retried (up to ``EARLY_RETRIES`` times).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TextIO

import pexpect

PROMPT = "ibi-guest# "
EARLY_RETRIES = 3
# reached once the kernel hands over to the initramfs
INITRD_STARTED = "Run /init as init process"
EARLY_FAILURES = [r"Kernel panic - not syncing", r"\bOops\b", r"BUG: unable to handle",
                  r"general protection fault"]
BOOT_TIMEOUT = int(os.environ.get("IBI_VM_BOOT_TIMEOUT", "420"))

BASE_APPEND = ("console=ttyS0,115200 panic=-1 rd.ibi.data=LABEL=ibidata "
               "systemd.show_status=1 net.ifnames=0 rd.udev.log_level=err")


BOOT_TIMES: list[tuple[str, float]] = []  # (boot name, seconds) of this process's boots


class BootError(AssertionError):
    """The guest did not reach a shell (or the expected screen)."""


def use_kvm() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(vmx|svm)\b", flags)) and os.access("/dev/kvm", os.R_OK | os.W_OK)


def qemu_argv(kernel: Path, initrd: Path, disk: Path, append: str,
              memory: str = "1024") -> list[str]:
    fmt = "qcow2" if disk.suffix == ".qcow2" else "raw"
    argv = [
        "qemu-system-x86_64",
        "-nodefaults", "-nographic", "-serial", "mon:stdio",
        "-no-reboot",
        "-m", memory, "-smp", "1",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
        "-drive", f"file={disk},if=virtio,format={fmt},cache=unsafe",
        "-nic", "none",
    ]
    if use_kvm():
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg"]
    return argv


class VM:
    """One boot of the guest. Use as a context manager: qemu is killed on exit."""

    def __init__(self, kernel: Path, initrd: Path, disk: Path, log_dir: Path, name: str,
                 extra_append: str = "", base_append: str = BASE_APPEND) -> None:
        self.kernel = kernel
        self.initrd = initrd
        self.disk = disk
        self.log_dir = log_dir
        self.name = name
        self.append = f"{base_append} {extra_append}".strip()
        self.proc: pexpect.spawn | None = None
        self.log_path: Path | None = None
        self.boot_seconds: float | None = None
        self.started = 0.0
        self._log: TextIO | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start qemu and wait until the kernel runs the initramfs (retrying early crashes)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, EARLY_RETRIES + 1):
            self.log_path = self.log_dir / f"{self.name}-try{attempt}.log"
            log = self.log_path.open("w", encoding="utf-8", errors="replace")
            self._log = log
            argv = qemu_argv(self.kernel, self.initrd, self.disk, self.append)
            log.write("# " + " ".join(argv) + "\n")
            self.started = time.monotonic()
            self.proc = pexpect.spawn(argv[0], argv[1:], encoding="utf-8",
                                      codec_errors="replace", dimensions=(24, 80),
                                      timeout=BOOT_TIMEOUT, maxread=65536)
            self.proc.logfile_read = self._log
            i = self.proc.expect([INITRD_STARTED, *EARLY_FAILURES, pexpect.EOF,
                                  pexpect.TIMEOUT], timeout=180)
            if i == 0:
                return
            print(f"[vm] {self.name}: early failure before the initramfs (try {attempt}), "
                  f"see {self.log_path}; retrying", flush=True)
            self._kill()
        raise BootError(f"{self.name}: the kernel crashed before the initramfs "
                        f"{EARLY_RETRIES} times (last log: {self.log_path})")

    def boot(self) -> float:
        """Start and wait for the autologin root shell; returns the boot time in seconds."""
        if self.proc is None:
            self.start()
        self.wait_for_shell()
        return self.boot_seconds or 0.0

    def wait_for_shell(self, timeout: float = BOOT_TIMEOUT) -> None:
        assert self.proc is not None
        i = self.expect([PROMPT, "Entering emergency mode", "You are in emergency mode",
                         "Give root password for maintenance", "dracut Warning: Could not boot",
                         "emergency shell"], timeout=timeout)
        if i != 0:
            # give the emergency output a moment to reach the log
            with contextlib.suppress(pexpect.EOF):
                self.proc.expect(pexpect.TIMEOUT, timeout=5)
            raise BootError(f"{self.name}: the guest fell into an emergency shell "
                            f"(log: {self.log_path})")
        self.boot_seconds = round(time.monotonic() - self.started, 1)
        print(f"[vm] {self.name}: root shell after {self.boot_seconds} s "
              f"(log: {self.log_path})", flush=True)
        self._record_time()
        # kernel messages would interleave with command output
        self.run("dmesg -n 1; stty rows 24 cols 80; unset HISTFILE", timeout=60)

    def _record_time(self) -> None:
        BOOT_TIMES.append((self.name, self.boot_seconds or 0.0))
        with (self.log_dir / "boot-times.txt").open("a") as fh:
            fh.write(f"{self.name}\t{self.boot_seconds}\t{self.append}\n")

    def expect(self, patterns: Sequence[str] | str, timeout: float = 120) -> int:
        """pexpect's expect, with a BootError naming the log on timeout or EOF."""
        assert self.proc is not None
        pats = [patterns] if isinstance(patterns, str) else list(patterns)
        try:
            i: int = self.proc.expect(pats, timeout=timeout)
            return i
        except pexpect.TIMEOUT:
            raise BootError(f"{self.name}: timed out after {timeout} s waiting for {pats!r} "
                            f"(log: {self.log_path})") from None
        except pexpect.EOF:
            raise BootError(f"{self.name}: qemu exited while waiting for {pats!r} "
                            f"(log: {self.log_path})") from None

    def send(self, text: str) -> None:
        assert self.proc is not None
        self.proc.send(text)

    def run(self, cmd: str, timeout: float = 120) -> tuple[int, str]:
        """Run ``cmd`` in the guest shell; returns (exit status, output without \\r)."""
        assert self.proc is not None
        tag = secrets.token_hex(4)
        # one line (a second line's echo could land inside the output); the markers are
        # printed with %s, so the echoed command line never contains them
        self.proc.sendline(f"printf '@@B%s\\n' {tag}; {cmd}; printf '@@E%s %d\\n' {tag} $?")
        self.expect(f"@@B{tag}\r*\n", timeout=timeout)
        self.expect(f"@@E{tag} (\\d+)\r*\n", timeout=timeout)
        out = self.proc.before or ""
        rc = int(self.proc.match.group(1))
        out = out.replace("\r", "")
        return rc, out.strip("\n")

    def check(self, cmd: str, timeout: float = 120) -> str:
        """Run ``cmd``; fail the test if it exits non-zero. Returns its output."""
        rc, out = self.run(cmd, timeout)
        if rc != 0:
            raise AssertionError(f"{self.name}: `{cmd}` exited {rc}:\n{out}\n"
                                 f"(log: {self.log_path})")
        return out

    def poweroff(self, timeout: float = 180) -> None:
        """Shut the guest down cleanly and wait for qemu to exit."""
        assert self.proc is not None
        self.proc.sendline("sync; systemctl poweroff")
        try:
            self.proc.expect(pexpect.EOF, timeout=timeout)
        except pexpect.TIMEOUT:
            raise BootError(f"{self.name}: did not power off in {timeout} s "
                            f"(log: {self.log_path})") from None
        self._kill()

    def expect_exit(self, timeout: float = 180) -> None:
        """Wait for qemu to exit by itself (the guest powered off or rebooted)."""
        assert self.proc is not None
        try:
            self.proc.expect(pexpect.EOF, timeout=timeout)
        except pexpect.TIMEOUT:
            raise BootError(f"{self.name}: qemu still runs after {timeout} s "
                            f"(log: {self.log_path})") from None
        self._kill()

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.isalive():
                self.proc.terminate(force=True)
            self.proc.close(force=True)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> VM:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._kill()


def qemu_missing() -> str | None:
    """A reason the VM tests cannot run here, or None."""
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install qemu-system-x86 qemu-utils)"
    return None


class Console:
    """A pyte screen fed from a VM's console, for driving the urwid menu over serial."""

    def __init__(self, vm: VM, cols: int = 80, rows: int = 24) -> None:
        import pyte

        self.vm = vm
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def pump(self, seconds: float) -> None:
        """Feed whatever the guest prints for ``seconds`` into the screen."""
        assert self.vm.proc is not None
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            try:
                data = self.vm.proc.read_nonblocking(65536, timeout=min(left, 0.5))
            except pexpect.TIMEOUT:
                continue
            except pexpect.EOF:
                raise BootError(f"{self.vm.name}: qemu exited while the menu was expected "
                                f"(log: {self.vm.log_path})") from None
            self.stream.feed(data)

    def wait_for(self, *texts: str, timeout: float = 300) -> str:
        """Wait until one of ``texts`` is on the screen; returns it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            shown = self.text()
            for t in texts:
                if t in shown:
                    return t
            self.pump(1.0)
        raise BootError(f"{self.vm.name}: none of {texts!r} appeared on the screen in "
                        f"{timeout} s; the screen:\n{self.text()}\n(log: {self.vm.log_path})")

    def keys(self, text: str, settle: float = 1.0) -> None:
        """Type ``text`` (one key at a time: the serial line is slow) and let urwid redraw."""
        for ch in text:
            self.vm.send(ch)
            self.pump(0.15)
        self.pump(settle)
