"""Where ``ibi import``'s image comes from (maintenance/imports.py): a file, standard input
(``-``) or an http(s) URL (:func:`parse_source`), read as one byte stream and copied into
the store with its SHA-256 computed on the way (:func:`_receive`). What is not a squashfs
4.0 image is refused from its first bytes, a truncated download by its length, and the copy
stops before the data partition has less than the margin free.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import stat
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import psutil

from . import __version__, reclaim
from .errors import IntegrityError, NoSpace, NotFound, UsageError
from .fsio import one_line
from .model import Progress, ProgressFn

if TYPE_CHECKING:
    from .engine import Engine

TIMEOUT = 60  # seconds a download may stall (connecting, or between two reads)
CHUNK = 1 << 20
HEAD = 32  # bytes of a squashfs superblock up to its version
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class Stream(Protocol):
    """What an image is read from: a file, standard input, an HTTP response."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Source:
    """Where the image comes from: ``kind`` is ``file``, ``stdin`` or ``url``."""

    kind: str
    spec: str  # the path or URL as given
    label: str  # how messages name it (a URL without credentials or query)

    @property
    def path(self) -> Path:
        return Path(self.spec)


def parse_source(spec: str) -> Source:
    if spec == "-":
        return Source("stdin", spec, "standard input")
    if _URL.match(spec):
        url = urllib.parse.urlsplit(spec)
        if url.scheme.lower() not in ("http", "https") or not url.hostname:
            raise UsageError(f"cannot import from {spec.split('://', 1)[0]}:// URLs: give an "
                             "http:// or https:// URL, a file, or - for standard input")
        # a presigned URL carries its secret in the query, a user in the netloc: keep
        # both out of messages and metadata
        host = url.hostname + (f":{url.port}" if url.port else "")
        return Source("url", spec, f"{url.scheme.lower()}://{host}{url.path}")
    if not spec:
        raise UsageError("no image given: --image FILE, URL or -")
    return Source("file", spec, spec)


# ---------------------------------------------------------------------- the copy

@contextlib.contextmanager
def _open(src: Source) -> Iterator[tuple[Stream, int]]:
    """The source as a byte stream, and its size (0: unknown)."""
    if src.kind == "stdin":
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("standard input is a terminal: pipe the image in "
                             "(ibi import --image - < FILE.sqfs)")
        yield sys.stdin.buffer, 0
        return
    if src.kind == "file":
        try:
            f = open(src.path, "rb")  # noqa: SIM115 (closed below)
        except OSError as e:
            raise NotFound(f"cannot read {src.label}: {e.strerror}") from None
        with f:
            mode = os.fstat(f.fileno()).st_mode
            yield f, os.fstat(f.fileno()).st_size if stat.S_ISREG(mode) else 0
        return
    req = urllib.request.Request(src.spec, headers={"User-Agent": f"ibi/{__version__}"})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT)
    except urllib.error.HTTPError as e:
        raise NotFound(f"cannot download {src.label}: HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise NotFound(f"cannot download {src.label}: {_reason(e.reason)}") from None
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise NotFound(f"cannot download {src.label}: {_reason(e)}") from None
    with resp:
        length = resp.headers.get("Content-Length", "")
        yield resp, int(length) if length.isdigit() else 0


def _reason(e: object) -> str:
    if isinstance(e, TimeoutError):
        return f"no answer within {TIMEOUT} s"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return one_line(e) or type(e).__name__


def _receive(eng: Engine, src: Source, tmp: Path, progress: ProgressFn | None,
             margin: int) -> tuple[str, int]:
    """Stream the source into ``tmp``; return its SHA-256 and size. Stops with NoSpace
    before the data partition has less than ``margin`` bytes free."""
    phase = {"url": "downloading", "stdin": "reading"}.get(src.kind, "copying")
    h = hashlib.sha256()
    done = 0
    head = b""  # the first bytes: refused early when they are not a squashfs image's
    with _open(src) as (stream, total), open(tmp, "xb") as out:
        if total:
            eng._check_space(total + margin, f"import {src.label}")
        step = max(total // 100, CHUNK)
        next_report = 0
        while True:
            try:
                chunk = stream.read(CHUNK)
            except (OSError, http.client.HTTPException, ValueError) as e:
                if isinstance(e, http.client.IncompleteRead):
                    raise IntegrityError(f"{src.label} is truncated: the download ended "
                                         f"after {done + len(e.partial)} of {total} bytes"
                                         ) from None
                raise IntegrityError(f"reading {src.label} failed after {done} bytes: "
                                     f"{_reason(e)}") from None
            if not chunk:
                break
            if len(head) < HEAD:
                head += chunk[: HEAD - len(head)]
                if len(head) == HEAD:
                    _check_head(head, src.label)
            _room(eng, done, len(chunk), margin, src.label)
            try:
                out.write(chunk)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise NoSpace(f"the data partition filled up importing {src.label} "
                                  f"({done} bytes written)",
                                  hint="free space (ibi purge, ibi delete) and try again"
                                  ) from None
                raise
            h.update(chunk)
            done += len(chunk)
            if progress and done >= next_report:
                progress(Progress(phase, done, total, src.label))
                next_report = done + step
        if progress:
            progress(Progress(phase, done, total or done, src.label))
    if len(head) < HEAD:
        _check_head(head, src.label)
    if total and done != total:
        raise IntegrityError(f"{src.label} is truncated: {done} of {total} bytes arrived"
                             if done < total else
                             f"{src.label} grew while it was copied ({done} bytes, not "
                             f"{total})")
    return h.hexdigest(), done


def _check_head(head: bytes, label: str) -> None:
    """Refuse early what is not a squashfs 4.0 image (its magic and version)."""
    if not head:
        raise IntegrityError(f"{label} is empty: no image arrived")
    if head[:4] != b"hsqs":
        raise IntegrityError(f"{label}: not a squashfs image (no hsqs magic)")
    if len(head) >= HEAD and (int.from_bytes(head[28:30], "little"),
                            int.from_bytes(head[30:32], "little")) != (4, 0):
        raise IntegrityError(f"{label}: squashfs version "
                             f"{int.from_bytes(head[28:30], 'little')}."
                             f"{int.from_bytes(head[30:32], 'little')}, not 4.0")


def _room(eng: Engine, done: int, more: int, margin: int, label: str) -> None:
    """Refuse the next ``more`` bytes of a stream when they would leave less than
    ``margin`` free (after deleting the cleared layers that wait for :mod:`reclaim`)."""
    st = eng.store
    free = psutil.disk_usage(str(st.data)).free
    if free - more < margin and reclaim.waiting(eng):
        reclaim.reclaim(eng)
        free = psutil.disk_usage(str(st.data)).free
    if free - more < margin:
        from .status import human

        raise NoSpace(f"not enough space to import {label}: {human(done)} received, "
                      f"{human(free)} free on {st.data} (ibi keeps {human(margin)} free)",
                      hint="free space (ibi purge, ibi delete) and try again")
