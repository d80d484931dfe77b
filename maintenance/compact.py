"""Compaction: a run of incremental restore points merged into one image.

The run's images, mounted read-only as one overlay (``run``), hold everything the run adds
or changes, with each directory's and file's topmost version: that tree is squashed as it
is. What the run *removes* from the images below it cannot be seen in that overlay (a
whiteout over nothing is nothing), so it is worked out from three views, all read-only
overlays of the same images the boot path uses:

- ``run``: the run alone;
- ``below``: the images under the run;
- ``whole``: below and the run together, the system as the stack shows it.

For each directory of ``run`` that is a directory in ``below`` too, every entry of
``below`` that ``run`` lacks and ``whole`` lacks as well was hidden by the run (a whiteout,
or an opaque directory): the new image gets a whiteout for it (by lookup, not by listing:
overlayfs lists the whiteouts of a directory only one layer has, and mksquashfs, finding
nothing under such a name, leaves it out) (a 0/0 character device,
what overlayfs honours in a lower layer), added as a mksquashfs pseudo file. An opaque
directory thereby becomes a directory whose hidden entries are each whited out, at every
depth the run reaches; the union is the same.

Then the new image is checked against the run it replaces: below + new image must show,
in every directory the run touches, the same entries with the same type, mode, owner,
times, size, device number, link target and extended attributes, and the same bytes in
every file the run holds (anything else comes from the images below in both views).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import kernels, mounts, squash
from .errors import IntegrityError, NotFound, UsageError
from .model import ImageMeta, Kind, Progress, ProgressFn
from .records import IMAGE_EXT, check_name, utcnow

if TYPE_CHECKING:
    from .engine import Engine

COMPACTED = "compacted"  # the source_layer of a compacted image (never a layer id)
_CHUNK = 1 << 20
_ESCAPE = set(' \t"\'\\')


def _is_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _dirs(root: Path) -> Iterator[str]:
    """Every directory under ``root`` (``""`` for root itself), relative, never following
    a symbolic link."""
    for top, dirs, _files in os.walk(root):
        rel = os.path.relpath(top, root)
        yield "" if rel == "." else rel
        dirs.sort()


def hidden(run: Path, below: Path, whole: Path) -> list[str]:
    """The paths (relative, sorted) the run hides from the images below it."""
    out = []
    for rel in _dirs(run):
        if not _is_dir(below / rel):
            continue
        for name in sorted(os.listdir(below / rel)):
            path = os.path.join(rel, name)
            if not os.path.lexists(run / path) and not os.path.lexists(whole / path):
                out.append(path)
    return out


def _entries(d: Path) -> list[str]:
    """A directory's entries as lookups see them: overlayfs lists the whiteouts of a
    directory that only one of its layers has, but finds nothing under their names."""
    return sorted(n for n in os.listdir(d) if os.path.lexists(d / n))


def pseudo_line(path: str) -> str:
    """A whiteout as a mksquashfs pseudo definition (``name c mode uid gid major minor``),
    its name escaped; a name mksquashfs cannot be told (a line break) is refused."""
    if "\n" in path or "\r" in path:
        raise UsageError(f"cannot compact: the run hides a file whose name has a line "
                         f"break ({path!r}); delete the restore points instead")
    name = "".join("\\" + c if c in _ESCAPE else c for c in path)
    return f"{name} c 0 0 0 0 0"


def write_pseudo(paths: list[str], dest: Path) -> None:
    dest.write_text("".join(pseudo_line(p) + "\n" for p in paths), encoding="utf-8",
                    errors="surrogateescape")


def _xattrs(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for n in names:
        try:
            out[n] = os.getxattr(path, n, follow_symlinks=False)
        except OSError:
            out[n] = b"?"
    return out


def _describe(path: Path) -> tuple[object, ...]:
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    return (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns,
            st.st_size if kind != stat.S_IFDIR else 0,
            st.st_rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0,
            os.readlink(path) if kind == stat.S_IFLNK else "", _xattrs(path))


_FIELDS = ("type", "mode", "owner", "group", "modification time", "size", "device number",
           "link target", "extended attributes")


def _same_bytes(a: Path, b: Path) -> bool:
    with open(a, "rb", buffering=0) as fa, open(b, "rb", buffering=0) as fb:
        while True:
            ca, cb = fa.read(_CHUNK), fb.read(_CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


def differences(run: Path, old: Path, new: Path, progress: ProgressFn | None = None,
                label: str = "", limit: int = 20) -> list[str]:
    """Where ``new`` (below + the compacted image) differs from ``old`` (below + the run),
    in the directories the run touches: at most ``limit`` one-line findings."""
    out: list[str] = []
    dirs = list(_dirs(run))
    for i, rel in enumerate(dirs):
        if progress:
            progress(Progress("checking", i, len(dirs), label))
        a, b = _entries(old / rel), _entries(new / rel)
        if a != b:
            gone, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            out.append(f"/{rel}: " + "; ".join(
                [*(f"{n} missing" for n in gone[:3]), *(f"{n} extra" for n in extra[:3])]))
        for name in sorted(set(a) & set(b)):
            path = os.path.join(rel, name)
            da, db = _describe(old / path), _describe(new / path)
            if da != db:
                field = next(f for f, x, y in zip(_FIELDS, da, db, strict=True) if x != y)
                out.append(f"/{path}: {field} differs")
            elif da[0] == stat.S_IFREG and os.path.lexists(run / path) and \
                    not _same_bytes(old / path, new / path):
                out.append(f"/{path}: contents differ")
            if len(out) >= limit:
                return out
    if progress:
        progress(Progress("checking", len(dirs), len(dirs), label))
    return out


@dataclasses.dataclass(frozen=True)
class CompactPlan:
    """What ``ibi compact`` would do: merge ``run`` (bottom first; the top of the active
    stack) into one incremental image on ``below``."""

    stack: tuple[str, ...]  # the active stack now
    below: tuple[str, ...]  # the images the run sits on (kept as they are)
    run: tuple[str, ...]  # the restore points merged
    run_bytes: int  # their images' size: about the new image's, the space it needs

    @property
    def depth_after(self) -> int:
        return len(self.below) + 1


def plan(eng: Engine, first: str | None = None, last: str | None = None) -> CompactPlan:
    """The run to merge: from ``first`` (default: the lowest incremental restore point of
    the active stack) to ``last``, which must be the top of the stack (images above the
    run record the images they were made on: merging under them would strand them)."""
    st = eng.store
    st.require()
    tab = st.read_roottab()
    for n in tab:
        if not st.has_image(n):
            raise NotFound(f"image {n!r} in roottab is missing")
    for given in (first, last):
        if given is not None and given not in tab:
            raise UsageError(f"{given!r} is not in the active stack ({' '.join(tab)})")
    if last is not None and last != tab[-1]:
        raise UsageError(f"a run ends at the top of the stack ({tab[-1]}), not at {last}",
                         hint="ibi compact --to " + tab[-1])
    start = tab.index(first) if first is not None else 1
    if start == 0:
        raise UsageError(f"{tab[0]} is the bottom of the stack (a base or full image): "
                         "the run starts above it")
    run = tab[start:]
    for n in run:
        meta = st.read_meta(n)
        if meta.kind is not Kind.INCREMENTAL:
            raise UsageError(f"{n} is a {meta.kind.value} image: only incremental restore "
                             "points are merged")
    if len(run) < 2:
        raise UsageError(f"nothing to compact: the run from {run[0] if run else tab[-1]} "
                         "to the top is one image" if run else
                         "nothing to compact: the stack is one image")
    return CompactPlan(tuple(tab), tuple(tab[:start]), tuple(run),
                       sum(st.image_path(n).stat().st_size for n in run))


def compact(eng: Engine, p: CompactPlan, *, name: str,
            description: str = "", compressor: str = squash.DEFAULT_COMPRESSOR,
            level: int | None = None, progress: ProgressFn | None = None) -> ImageMeta:
    """Merge the run of ``p`` into one new image and make the stack ``below + [it]``: the
    image is squashed into a temporary file, checked against the run, committed (its
    metadata, then the rename), and roottab is written: the commit point. The images of
    the run stay in the store (ibi prune or ibi delete removes them). The writable layer
    is untouched: the union under it is the same. A trial of the old stack (boot counting)
    carries over to the new one."""
    st = eng.store
    squash.compression_args(compressor, level)
    name = check_name(name or utcnow().strftime("%Y%m%d-%H%M%S") + "-compact")
    if st.has_image(name) or st.meta_path(name).exists():
        raise UsageError(f"an image named {name!r} already exists")
    if st.read_roottab() != list(p.stack):
        raise UsageError("the active stack changed since the plan was made; try again")
    eng._check_space(p.run_bytes + p.run_bytes // 50 + (16 << 20),
                    f"merge {len(p.run)} restore points")
    tmp = st.tmp_path(name, IMAGE_EXT)
    stage = eng.run_dir / "stacks" / f"image-{os.getpid()}"
    label = f"{p.run[0]}..{p.run[-1]}"
    try:
        with mounts.temporary_mounts() as m:
            low = stage / "lower"
            imgs = [m.image(st.image_path(n), low / str(i))
                    for i, n in enumerate((*p.below, *p.run))]
            below_dirs, run_dirs = imgs[:len(p.below)][::-1], imgs[len(p.below):][::-1]

            def view(where: str, lowers: list[Path]) -> Path:
                if len(lowers) == 1:
                    return lowers[0]
                target = stage / where
                target.mkdir(parents=True, exist_ok=True)
                m.overlay(target, lowers, readonly=True)
                return target

            run = view("run", run_dirs)
            below = view("below", below_dirs)
            whole = view("whole", [*run_dirs, *below_dirs])
            pseudo = stage / "whiteouts"
            write_pseudo(hidden(run, below, whole), pseudo)
            squash.mksquashfs(run, tmp, compressor=compressor, level=level,
                              progress=progress, label=name, pseudo=pseudo)
            new = view("new", [m.image(tmp, low / "new"), *below_dirs])
            found = differences(run, whole, new, progress, name)
            if found:
                raise IntegrityError(f"the merged image differs from the run it replaces "
                                     f"({len(found)} finding(s); first: {found[0]})",
                                     hint="nothing was changed; please report this")
        meta = eng._commit_image(tmp, name, Kind.INCREMENTAL,
                                description or f"compacts {label} ({len(p.run)} restore "
                                               "points)",
                                p.below, p.below[-1], compressor, progress,
                                source_layer=COMPACTED,
                                kernels=kernels.stack_kernels(st, p.stack))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    finally:
        if not mounts.mounts_under(stage):
            shutil.rmtree(stage, ignore_errors=True)
    new_tab = [*p.below, name]
    t = eng.trial()
    if t is not None:  # the same boots go on counting for the same stack, merged
        st.write_trial(dataclasses.replace(t, stack=tuple(new_tab)))
    st.write_roottab(new_tab)  # the commit point
    eng._refresh_quietly()
    return meta
