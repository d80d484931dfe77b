"""The one place that spawns processes: argv lists only, stdin from /dev/null, a minimal
environment, the command logged at debug level, and failures raised once as CommandError
carrying the command's stderr."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence

from .errors import CommandError, IbiError

log = logging.getLogger(__name__)

_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ")


def _env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    env["LC_ALL"] = "C"
    return env


def which(tool: str) -> str:
    """The tool's path, or an IbiError naming the package to install."""
    path = shutil.which(tool, path=_env()["PATH"] + ":/usr/sbin:/sbin")
    if path is None:
        pkg = "squashfs-tools" if "squashfs" in tool else "util-linux"
        raise IbiError(f"{tool} not found", hint=f"install it: apt-get install {pkg}")
    return path


def run(argv: Sequence[str], *, check: bool = True,
        cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; return its output. Raise CommandError on failure."""
    argv = [str(a) for a in argv]
    log.debug("run: %s%s", " ".join(argv), f" (in {cwd})" if cwd else "")
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=_env(),
            cwd=cwd,
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
    bar, split on carriage returns); call ``on_progress(done, total)`` as it advances."""
    argv = [str(a) for a in argv]
    log.debug("run: %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=_env(),
        )
    except FileNotFoundError as e:
        raise IbiError(f"{argv[0]} not found") from e
    assert proc.stdout is not None
    buf = b""
    last = (-1, -1)
    tail: list[bytes] = []
    while True:
        chunk = os.read(proc.stdout.fileno(), 65536)
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
    rc = proc.wait()
    if rc != 0:
        raise CommandError(argv, rc, b"\n".join(tail).decode(errors="replace"))
