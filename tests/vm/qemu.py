"""Boot the test guest in qemu and drive its serial console with pexpect.

One :class:`VM` is one qemu process (``-no-reboot``: a reboot or poweroff ends it), so a
"reboot" in a test is a new VM on the same disk. Every boot's console goes to its own log
file and its boot time (qemu start to a root shell) is recorded and printed.

TCG is used unless the host CPU advertises vmx/svm (the KVM on these machines cannot run a
stock kernel). qemu 7.2 under TCG now and then oopses before the initramfs runs: such a boot
is retried (up to ``EARLY_RETRIES`` times).

A VM without a kernel boots its disk like a real machine: SeaBIOS, then the disk's GRUB on
the serial console (:func:`grub_menu` and :func:`grub_choose` read and drive its menu).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
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
# generous: a failure detector, not a speed target; two guests boot side by side (and
# beside the host tests) under software emulation, and a boot alone takes 60-170 s
BOOT_TIMEOUT = int(os.environ.get("IBI_VM_BOOT_TIMEOUT", "900"))

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


def qemu_argv(kernel: Path | None, initrd: Path | None, disk: Path, append: str,
              memory: str = "1024", smp: int = 1, serial: str = "mon:stdio",
              drives: Sequence[Path] = ()) -> list[str]:
    """The qemu command line. With ``kernel`` None the machine boots from its disk through
    the BIOS (SeaBIOS) and the disk's own bootloader, like an installed machine. ``disk`` is
    /dev/vda; ``drives`` are more virtio disks (vdb, ...)."""
    argv = [
        "qemu-system-x86_64",
        "-nodefaults", "-nographic", "-serial", serial,
        "-no-reboot",
        "-m", str(memory), "-smp", str(smp),
    ]
    if serial != "mon:stdio":
        argv += ["-monitor", "none"]
    if kernel is not None:
        argv += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
    for d in (disk, *drives):
        fmt = "qcow2" if d.suffix == ".qcow2" else "raw"
        argv += ["-drive", f"file={d},if=virtio,format={fmt},cache=unsafe"]
    argv += ["-nic", "none"]
    if use_kvm():
        argv += ["-accel", "kvm", "-cpu", "host"]
    else:
        argv += ["-accel", "tcg"]
    return argv


class VM:
    """One boot of the guest. Use as a context manager: qemu is killed on exit."""

    def __init__(self, kernel: Path | None, initrd: Path | None, disk: Path, log_dir: Path,
                 name: str, extra_append: str = "", base_append: str = BASE_APPEND, *,
                 smp: int = 1, memory: str = "1024",
                 bootloader: Callable[[VM], None] | None = None,
                 drives: Sequence[Path] = ()) -> None:
        """``kernel`` None: boot the disk through the BIOS and its bootloader (``initrd`` and
        the append arguments are then unused). ``bootloader(vm)`` runs right after qemu
        starts, before the kernel (and again on a retry): e.g. :func:`grub_choose`.
        ``drives``: more disks after ``disk`` (vdb, ...)."""
        self.kernel = kernel
        self.initrd = initrd
        self.disk = disk
        self.log_dir = log_dir
        self.name = name
        self.append = f"{base_append} {extra_append}".strip() if kernel is not None else ""
        self.smp = smp
        self.memory = memory
        self.bootloader = bootloader
        self.drives = list(drives)
        self.proc: pexpect.spawn | None = None
        self.log_path: Path | None = None
        self.boot_seconds: float | None = None
        self.started = 0.0
        self._log: TextIO | None = None
        self._console: Console | None = None

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start qemu and wait until the kernel runs the initramfs (retrying early crashes)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, EARLY_RETRIES + 1):
            self.log_path = self.log_dir / f"{self.name}-try{attempt}.log"
            log = self.log_path.open("w", encoding="utf-8", errors="replace")
            self._log = log
            argv = qemu_argv(self.kernel, self.initrd, self.disk, self.append,
                             memory=self.memory, smp=self.smp, drives=self.drives)
            log.write("# " + " ".join(argv) + "\n")
            self._console = None
            self.started = time.monotonic()
            self.proc = pexpect.spawn(argv[0], argv[1:], encoding="utf-8",
                                      codec_errors="replace", dimensions=(24, 80),
                                      timeout=BOOT_TIMEOUT, maxread=65536)
            self.proc.logfile_read = self._log
            if self.bootloader is not None:
                self.bootloader(self)
            seen = self._console.seen if self._console is not None else ""
            if INITRD_STARTED in seen:  # already read by the bootloader driver
                return
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
        # and so would systemd's status lines of the units after multi-user.target (the
        # autologin shell comes before them: ibi-boot-ok, ibi-state-save, ibi-reclaim, which
        # a deep stack makes slow): the boot's jobs end first
        self.run("timeout 600 systemctl is-system-running --wait >/dev/null 2>&1",
                 timeout=660)

    def _record_time(self) -> None:
        BOOT_TIMES.append((self.name, self.boot_seconds or 0.0))
        how = self.append if self.kernel is not None else "(BIOS + the disk's bootloader)"
        with (self.log_dir / "boot-times.txt").open("a") as fh:
            fh.write(f"{self.name}\t{self.boot_seconds}\t{how}\n")

    def console(self) -> Console:
        """This boot's screen (a :class:`Console`), kept across calls (e.g. GRUB menus)."""
        if self._console is None:
            self._console = Console(self)
        return self._console

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
        self.seen = ""  # the last 64 KiB fed to the screen (pexpect will not see it again)

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
            self.seen = (self.seen + data)[-65536:]
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


# --- GRUB's menu on the serial console ------------------------------------------------------

GRUB_MENU_HELP = "keys to select which entry is highlighted"
GRUB_KEY_UP = "\x1b[A"
GRUB_KEY_DOWN = "\x1b[B"
_GRUB_BORDER = re.compile(r"\s*[+┌└][-─]{20,}[+┐┘]\s*")
_GRUB_ROW = re.compile(r"(\s*[|│])(.*)[|│]\s*")


def grub_screen(con: Console) -> tuple[list[str], int | None] | None:
    """GRUB's menu as drawn on ``con``: (entry titles, index of the highlighted one), or None
    while no complete menu is on the screen. GRUB's text menu draws a box of entries, marks
    the highlighted one with ``*`` in front and reverse video, and prints its key help below."""
    lines = con.screen.display
    if not any(GRUB_MENU_HELP in ln for ln in lines):
        return None
    borders = [y for y, ln in enumerate(lines) if _GRUB_BORDER.fullmatch(ln)]
    if len(borders) < 2:
        return None
    entries: list[str] = []
    selected: int | None = None
    # the entry rows sit between the box's left and right borders; GRUB draws on two
    # terminals (its serial one, and the BIOS console that qemu -nographic also sends to the
    # serial line), which now and then leaves a row without its border characters: read the
    # columns instead of requiring them
    left = _GRUB_BORDER.fullmatch(lines[borders[0]])
    x0 = len(lines[borders[0]]) - len(lines[borders[0]].lstrip()) + 1 if left else 2
    for y in range(borders[0] + 1, borders[1]):
        m = _GRUB_ROW.fullmatch(lines[y])
        inner = m.group(2) if m else lines[y][x0:x0 + 76]
        if m:
            x0 = len(m.group(1))
        title = inner[1:].rstrip().rstrip("|│").rstrip()
        if not title:
            continue
        row = con.screen.buffer[y]
        reverse = any(row[x].reverse for x in range(x0 + 1, x0 + 1 + len(title)))
        if inner.startswith("*") or (selected is None and reverse):
            selected = len(entries)
        entries.append(title)
    return (entries, selected) if entries else None


def _grub_wait(vm: VM, timeout: float) -> tuple[list[str], int | None]:
    """Wait for a complete GRUB menu (the same on two reads 0.3 s apart)."""
    con = vm.console()
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        now = grub_screen(con)
        if now is not None and now[1] is not None and now == last:
            return now
        last = now
        con.pump(0.3)
    raise BootError(f"{vm.name}: no GRUB menu on the console in {timeout} s; the screen:\n"
                    f"{con.text()}\n(log: {vm.log_path})")


def grub_menu(vm: VM, timeout: float = 180) -> list[str]:
    """Wait for GRUB's menu on ``vm``'s serial console; returns the entry titles. Presses no
    key: the countdown goes on (call :func:`grub_choose` at once to pick an entry)."""
    return _grub_wait(vm, timeout)[0]


def grub_choose(vm: VM, title: str, timeout: float = 180) -> str:
    """Highlight the first GRUB entry whose title contains ``title`` (arrow keys, reading the
    highlight back from the screen) and press Enter; returns the full title. The first key
    stops GRUB's countdown. A submenu's entries are then drawn afresh: call again to choose
    in it. Fails with the screen when no entry matches."""
    con = vm.console()
    entries, selected = _grub_wait(vm, timeout)
    matches = [i for i, e in enumerate(entries) if title in e]
    if not matches:
        raise BootError(f"{vm.name}: no GRUB entry contains {title!r}; the screen:\n"
                        f"{con.text()}\n(log: {vm.log_path})")
    target = matches[0]
    for _ in range(2 * len(entries) + 2):
        if selected is None:
            raise BootError(f"{vm.name}: cannot tell GRUB's highlighted entry; the screen:\n"
                            f"{con.text()}\n(log: {vm.log_path})")
        if selected == target:
            break
        vm.send(GRUB_KEY_DOWN if target > selected else GRUB_KEY_UP)
        # GRUB draws on two terminals (serial, and the BIOS console that -nographic also
        # sends to the serial line): trust only a highlight that reads the same twice
        before = selected
        end = time.monotonic() + 20
        last = None
        while time.monotonic() < end:
            con.pump(0.3)
            now = grub_screen(con)
            if now is not None and now == last and now[1] is not None and now[1] != before \
                    and len(now[0]) == len(entries):
                entries, selected = now
                break
            last = now
    else:
        raise BootError(f"{vm.name}: could not move GRUB's highlight to {entries[target]!r}; "
                        f"the screen:\n{con.text()}\n(log: {vm.log_path})")
    vm.send("\r")
    # a submenu is drawn afresh: the old menu must not pass for it
    con.screen.reset()
    return entries[target]
