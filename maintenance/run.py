"""The one place that spawns processes: argv lists only, stdin from /dev/null, a minimal
environment, the command logged at debug level, and failures raised once as CommandError
carrying the command's stderr."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import logging
import os
import pty
import re
import shutil
import signal
import struct
import subprocess
import termios
from collections.abc import Callable, Sequence

from .errors import CommandError, IbiError

log = logging.getLogger(__name__)

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


def _env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"
    return env


_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: be killed when ibi dies (a killed ``ibi create`` must
    not leave mksquashfs writing into the store)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def which(tool: str) -> str:
    """The tool's path, or an IbiError naming the package to install."""
    path = shutil.which(tool, path=_env()["PATH"] + ":/usr/sbin:/sbin")
    if path is None:
        pkg = "squashfs-tools" if "squashfs" in tool else "util-linux"
        raise IbiError(f"{tool} not found", hint=f"install it: apt-get install {pkg}")
    return path


def run(argv: Sequence[str], *, check: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        stdin_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; return its output. Raise CommandError on failure.
    ``stdin_text`` is fed to its standard input (else it reads /dev/null)."""
    argv = [str(a) for a in argv]
    log.debug("run: %s%s", " ".join(argv), f" (in {cwd})" if cwd else "")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=_env(), cwd=cwd,
            **({"input": stdin_text} if stdin_text is not None
               else {"stdin": subprocess.DEVNULL}),
        )
    except FileNotFoundError as e:
        raise IbiError(f"{argv[0]} not found") from e
    if check and proc.returncode != 0:
        log.debug("failed (%d): %s", proc.returncode, proc.stderr.strip())
        raise CommandError(argv, proc.returncode, proc.stderr)
    return proc


_PROGRESS = re.compile(rb"(\d+)/(\d+)\s+(\d+)%")


def run_with_progress(argv: Sequence[str], on_progress: Callable[[int, int], None]) -> None:
    """Run a command whose output carries ``done/total NN%`` progress lines (mksquashfs's
    bar, split on carriage returns); call ``on_progress(done, total)`` as it advances.

    The command writes to a pseudo-terminal, not a pipe: mksquashfs's stdio buffers a
    pipe fully, so through one its progress would only arrive when it exits."""
    argv = [str(a) for a in argv]
    log.debug("run: %s", " ".join(argv))
    master, slave = pty.openpty()
    # a wide terminal, so the bar's figures are never cut
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave,
                                env=_env(), start_new_session=True,
                                preexec_fn=functools.partial(_die_with_parent, os.getpid()))
    except FileNotFoundError as e:
        os.close(master)
        raise IbiError(f"{argv[0]} not found") from e
    finally:
        os.close(slave)
    buf = b""
    last = (-1, -1)
    tail: list[bytes] = []
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError as e:  # EIO: the command closed the terminal (it exited)
                if e.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                break
            buf += chunk
            *parts, buf = re.split(rb"[\r\n]", buf)
            for part in parts:
                m = _PROGRESS.search(part)
                if m:
                    cur = (int(m.group(1)), int(m.group(2)))
                    if cur != last:
                        last = cur
                        on_progress(*cur)
                elif part.strip():
                    tail = [*tail[-20:], part]
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(master)
    rc = proc.wait()
    if rc != 0:
        raise CommandError(argv, rc, b"\n".join(tail).decode(errors="replace"))


def spawn_idle(argv: Sequence[str], env: dict[str, str] | None = None) -> None:
    """Start ``argv`` detached (its own session, no terminal, outliving ibi) at idle
    priority: ``nice -n 19`` and ``ionice -c 3`` when they are installed. Raises OSError if
    it cannot start."""
    argv = [str(a) for a in argv]
    path = _env()["PATH"]
    if ionice := shutil.which("ionice", path=path):
        argv = [ionice, "-c", "3", *argv]
    if nice := shutil.which("nice", path=path):
        argv = [nice, "-n", "19", *argv]
    log.debug("spawn: %s", " ".join(argv))
    subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True,
                     env={**_env(), **(env or {})})
