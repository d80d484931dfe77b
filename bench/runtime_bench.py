#!/usr/bin/env python3
"""What the ibi stack costs a running system, against the same tree served otherwise
(issue 12; run by hand, as root; not part of the test suite).

One tree (default /usr/share, ~60,000 entries) is squashed into a base image the way
``ibi init`` does it (the project's mksquashfs settings), and served side by side by:

  native          the tree copied (from the image) to a plain directory on the data
                  file system (ext4 here)
  bare squashfs   the base image loop-mounted alone: THE baseline of the read rows
  ibi stack       assembled as ibi does it at runtime (``Engine.mount``): the image
                  loop-mounted read-only, overlayfs with maintenance.mounts' options and
                  the writable layer (upper + work) on the data file system (its
                  tree has one entry more: the /home that ibi mount binds)
  fuse-overlayfs  the same bare squashfs mount as lower, upper and work dirs on the
                  data file system
  unionfs-fuse    ``unionfs -o cow,hide_meta_files,allow_other UPPER=RW:LOWER=RO``, the
                  same lower (the approach of the project's seed text)

Read workloads, warm (one warm-up, then interleaved rounds, median) and cold (page,
dentry and inode caches dropped, and the FUSE daemons restarted, before each timed run):
``find ROOT -xdev``; an lstat of every entry (os.walk + os.lstat in-process);
``tar -C ROOT -cf /dev/null .`` (metadata only: GNU tar reads no data for /dev/null);
``tar -C ROOT -cf - . | cat > /dev/null`` (all data). Baseline: bare squashfs; the ibi
stack's target is <= 1.10x, the others are shown for comparison.

Write workloads, each round on a fresh writable layer (the upper re-created and the stack
remounted, untimed; native: the previous round's changes undone): create 10,000 files of
4 KiB in new directories; copy-up: append one byte to 2,000 image files spread over the
tree; delete 2,000 image files (whiteouts). The timed part ends with a sync (syncfs of the
mount, then of the data file system) so that work left in caches is paid by everyone
(the kernel overlay also fsyncs each file it copies up, as it always does). The bare
squashfs is read-only: write rows are compared against native.

The bench runs in a private mount namespace of its own (so other namespaces never hold
copies of its mounts), and takes every mount down on any exit, Ctrl-C included. A FUSE
tool that is not installed is skipped (the line says which package gives it).
Prints a table (median seconds; ratio to the baseline) and writes the rows to
bench/results/runtime.json (bench/common.py's format) or --json FILE.

Usage: sudo python3 bench/runtime_bench.py [--tree /usr/share] [--rounds 5]
                                           [--quick] [--json FILE] [--dir /var/tmp]
  --quick: /usr/share/doc, 2 rounds (a smoke run)
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import os
import shutil
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # bench/common.py

from maintenance import mounts
from maintenance.engine import Engine

BASELINE = "bare squashfs"
WRITE_BASELINE = "native"
IBI = "ibi stack"
TARGET, MAX_RATIO = "<= 1.10x", 1.10
CREATE_FILES = 10_000  # in directories of 100
CREATE_BYTES = 4096
CHANGE_FILES = 2_000  # appended to (copy-up) / deleted (whiteouts)
NEW_DIR = "ibi-runtime-bench"  # where the created files go, at the top of the tree

_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNS = 0x00020000


def private_namespace() -> None:
    """Move this process (and so every child: mount, the FUSE daemons) into a mount
    namespace of its own, private: the stacks of other people's namespaces never get a copy
    of our mounts (a copy would keep a layer "in use" for ibi and a FUSE daemon alive),
    and if we are killed the kernel takes every mount down with the namespace."""
    if _libc.unshare(CLONE_NEWNS) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"unshare(CLONE_NEWNS): {os.strerror(e)}")
    sh(["mount", "--make-rprivate", "/"])


def syncfs(path: Path) -> None:
    """syncfs(2) of the file system holding ``path`` (on a FUSE mount this writes its
    dirty pages back to the daemon; on an overlay it syncs the upper's file system)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"syncfs {path}: {os.strerror(e)}")
    finally:
        os.close(fd)


def sh(argv: list[str]) -> None:
    r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()[-300:]}")


def umount_hard(path: Path) -> None:
    """Unmount ``path`` if it is a mount point: umount, else fusermount -u, else a lazy
    umount (so that the temporary directory's removal never walks into a mount)."""
    for argv in (["umount", str(path)], ["fusermount3", "-u", str(path)],
                 ["fusermount", "-u", str(path)], ["umount", "-l", str(path)]):
        if not mounts.is_mountpoint(path):
            return
        with contextlib.suppress(OSError):
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if mounts.is_mountpoint(path):
        print(f"warning: {path} is still mounted", file=sys.stderr)


def sweep(root: Path) -> None:
    """The last line of defence before the work directory is removed: anything still
    mounted under ``root`` (an unmount that failed above) is taken down, lazily if busy."""
    for m in reversed(mounts.mounts_under(root)):
        print(f"warning: {m.mountpoint} was still mounted: unmounting it", file=sys.stderr)
        umount_hard(Path(m.mountpoint))


# ---------------------------------------------------------------- the workloads

def find(root: Path) -> None:
    sh(["find", str(root), "-xdev"])


@contextlib.contextmanager
def walking(root: Path) -> Iterator[Iterator[tuple[str, list[str], list[str]]]]:
    """os.walk, closed when the block ends: an interrupted walk must not keep a directory
    of a mount open while the mounts are taken down (it would be busy)."""
    it = os.walk(root)
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()



def tar_meta(root: Path) -> None:
    sh(["tar", "-C", str(root), "-cf", "/dev/null", "."])


def tar_data(root: Path) -> None:
    with subprocess.Popen(["tar", "-C", str(root), "-cf", "-", "."],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as tar:
        assert tar.stdout is not None and tar.stderr is not None
        try:
            cat = subprocess.run(["cat"], stdin=tar.stdout, stdout=subprocess.DEVNULL)
            tar.stdout.close()
            err = tar.stderr.read().decode(errors="replace")
        except BaseException:
            tar.kill()  # an interrupted tar must not keep the mount busy
            raise
    if tar.returncode != 0 or cat.returncode != 0:
        raise RuntimeError(f"tar -C {root} -cf - . | cat: exit {tar.returncode}/"
                           f"{cat.returncode}: {err.strip()[-300:]}")


READS: dict[str, Callable[[Path], object]] = {
    "find -xdev": find, "lstat every entry": common.lstat_all, "tar to /dev/null (meta)": tar_meta,
    "tar | cat (all data)": tar_data}


def create(root: Path, _files: list[str]) -> None:
    data = b"x" * CREATE_BYTES
    for d in range(CREATE_FILES // 100):
        dirpath = os.path.join(root, NEW_DIR, f"d{d:03d}")
        os.makedirs(dirpath)
        for f in range(100):
            fd = os.open(os.path.join(dirpath, f"f{f:03d}"),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)


def append(root: Path, files: list[str]) -> None:
    for rel in files:
        fd = os.open(os.path.join(root, rel), os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)


def delete(root: Path, files: list[str]) -> None:
    for rel in files:
        os.unlink(os.path.join(root, rel))


WRITES: dict[str, Callable[[Path, list[str]], None]] = {
    f"create {CREATE_FILES} x 4 KiB files": create,
    f"copy-up: append to {CHANGE_FILES}": append,
    f"delete {CHANGE_FILES} (whiteouts)": delete}


# ---------------------------------------------------------------- the subjects

class Subject:
    """One way of serving the tree: ``root`` is where it is read and written."""
    writable = True

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def up(self) -> None:
        """Mount (nothing for a plain directory)."""

    def down(self) -> None:
        """Unmount; called on every exit, so it does nothing when nothing is mounted."""

    def fresh(self, files: list[str]) -> None:
        """Put the writable state back as it was before any write workload."""

    def close(self) -> None:
        """down() on the way out: a failure is told, and left to sweep()."""
        try:
            self.down()
        except Exception as e:
            print(f"warning: {self.name}: {e}", file=sys.stderr)

    def restart(self) -> None:
        """Drop what a user-space daemon keeps between runs (before a cold run)."""


class Native(Subject):
    """The tree copied to a directory; fresh() undoes what the write workloads did,
    copying deleted files back from the image."""

    def __init__(self, root: Path, source: Path) -> None:
        super().__init__("native", root)
        self.source = source
        self.sizes: dict[str, int] = {}

    def fresh(self, files: list[str]) -> None:
        shutil.rmtree(self.root / NEW_DIR, ignore_errors=True)
        for rel in files:
            p = self.root / rel
            if p.exists():
                os.truncate(p, self.sizes[rel])
            else:
                shutil.copy2(self.source / rel, p)
                st = os.lstat(self.source / rel)
                os.chown(p, st.st_uid, st.st_gid)


class Bare(Subject):
    writable = False

    def __init__(self, root: Path, image: Path, stack: contextlib.ExitStack) -> None:
        super().__init__(BASELINE, root)
        self.image = image
        m = stack.enter_context(mounts.temporary_mounts())
        m.image(image, root)


class IbiStack(Subject):
    """The stack as ``ibi mount`` assembles it; fresh() re-creates the writable layer
    (upper and work emptied) and remounts."""

    def __init__(self, eng: Engine, root: Path) -> None:
        super().__init__(IBI, root)
        self.eng = eng

    def up(self) -> None:
        self.eng.mount(self.root)

    def down(self) -> None:
        if mounts.is_mountpoint(self.root) or mounts.mounts_under(
                mounts.stage_dir(self.eng.run_dir, self.root)):
            self.eng.umount(self.root)

    def fresh(self, files: list[str]) -> None:
        self.down()
        st = self.eng.store
        for d, mode in ((st.upper, 0o755), (st.work, 0o700)):
            shutil.rmtree(d)
            d.mkdir(mode=mode)
        self.up()


class Fuse(Subject):
    """A FUSE union over the bare squashfs mount, its upper in ``state``. The daemon runs
    in the foreground as our child (its own session: Ctrl-C reaches only us, and we take
    it down in order), so that down() can wait for it to let go of the lower."""

    def __init__(self, name: str, root: Path, lower: Path, state: Path, log: Path) -> None:
        super().__init__(name, root)
        self.lower = lower
        self.state = state
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def up(self) -> None:
        (self.state / "upper").mkdir(parents=True, exist_ok=True)
        (self.state / "work").mkdir(parents=True, exist_ok=True)
        self.root.mkdir(exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.argv(), "-f"], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 10
        while not mounts.is_mountpoint(self.root):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.down()
                tail = self.log.read_text(errors="replace").strip().splitlines()[-1:]
                raise RuntimeError(f"{' '.join(self.argv())}: not mounted "
                                   f"({tail[0] if tail else 'no message'})")
            time.sleep(0.01)

    def down(self) -> None:
        umount_hard(self.root)
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def fresh(self, files: list[str]) -> None:
        self.down()
        shutil.rmtree(self.state)
        self.up()

    def restart(self) -> None:
        self.down()
        self.up()


class FuseOverlayfs(Fuse):
    def argv(self) -> list[str]:
        return ["fuse-overlayfs", "-o", f"lowerdir={self.lower},upperdir={self.state}/upper,"
                f"workdir={self.state}/work,allow_other", str(self.root)]


class Unionfs(Fuse):
    def argv(self) -> list[str]:
        return ["unionfs", "-o", "cow,hide_meta_files,allow_other",
                f"{self.state}/upper=RW:{self.lower}=RO", str(self.root)]


FUSE_TOOLS = {"fuse-overlayfs": ("fuse-overlayfs", "fuse-overlayfs", FuseOverlayfs),
              "unionfs-fuse": ("unionfs", "unionfs-fuse", Unionfs)}


# ---------------------------------------------------------------- measuring

def spread(root: Path, n: int) -> list[str]:
    """``n`` regular files of the tree, evenly spaced in path order."""
    with walking(root) as it:
        files = sorted(os.path.relpath(os.path.join(top, f), root)
                       for top, _d, fs in it for f in fs
                       if stat.S_ISREG(os.lstat(os.path.join(top, f)).st_mode))
    if len(files) <= n:
        return files
    return [files[i * len(files) // n] for i in range(n)]


def read_rows(subjects: list[Subject], rounds: int) -> list[dict[str, Any]]:
    rows = []
    fuse = [s for s in subjects if isinstance(s, Fuse)]

    def cold() -> None:
        for s in fuse:
            s.restart()
        common.drop_caches()

    for mode in ("warm", "cold"):
        for label, fn in READS.items():
            fns: dict[str, Callable[[], object]] = {
                s.name: functools.partial(fn, s.root) for s in subjects}
            if mode == "warm":
                med = common.paired(fns, rounds)
                note = f"median of {rounds} interleaved rounds after one warm-up"
            else:
                med = common.paired(fns, rounds, warm=False, cold=cold)
                note = (f"median of {rounds} interleaved rounds, caches dropped (and FUSE "
                        "daemons restarted) before each")
            case = f"{label}, {mode}"
            print(f"{case:<36}" + "  ".join(f"{k} {v:.3f}" for k, v in med.items()),
                  flush=True)
            for s in subjects:
                if s.name == BASELINE:
                    rows.append(common.row(case, s.name, med[s.name], note=note))
                elif s.name == IBI:
                    rows.append(common.row(case, s.name, med[s.name], baseline=BASELINE,
                                           baseline_value=med[BASELINE], target=TARGET,
                                           max_ratio=MAX_RATIO, note=note))
                else:
                    rows.append(common.row(case, s.name, med[s.name], baseline=BASELINE,
                                           baseline_value=med[BASELINE], note=note))
    return rows


def write_rows(subjects: list[Subject], rounds: int, files: list[str],
               data_fs: Path) -> list[dict[str, Any]]:
    rows = []
    subjects = [s for s in subjects if s.writable]
    for label, fn in WRITES.items():
        times: dict[str, list[float]] = {s.name: [] for s in subjects}
        for r in range(rounds + 1):  # round 0: the warm-up, not counted
            for s in subjects:
                s.fresh(files)
                os.sync()  # the untimed reset's own writes are not the workload's

                def work(s: Subject = s,
                         fn: Callable[[Path, list[str]], None] = fn) -> None:
                    fn(s.root, files)
                    syncfs(s.root)
                    syncfs(data_fs)

                t = common.timed(work)
                if r:
                    times[s.name].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"{label:<36}" + "  ".join(f"{k} {v:.3f}" for k, v in med.items()), flush=True)
        note = (f"median of {rounds} interleaved rounds after one warm-up, each on a fresh "
                "writable layer (native: changes undone), sync (syncfs of the mount and of "
                "the data file system) inside the timed part; baseline native, as the bare "
                "squashfs is read-only")
        for s in subjects:
            if s.name == WRITE_BASELINE:
                rows.append(common.row(label, s.name, med[s.name], note=note))
            else:
                rows.append(common.row(label, s.name, med[s.name], baseline=WRITE_BASELINE,
                                       baseline_value=med[WRITE_BASELINE], note=note))
    return rows


def version(argv: list[str]) -> str:
    r = subprocess.run(argv, capture_output=True, text=True)
    lines = [ln for ln in (r.stdout + r.stderr).splitlines()
             if argv[0] in ln and "version" in ln]
    return lines[0].strip() if lines else "?"


def fs_type(path: Path) -> str:
    r = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", str(path)], capture_output=True,
                       text=True)
    return r.stdout.strip() or "?"


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=None, help="the tree to serve (default /usr/share)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: /usr/share/doc, 2 rounds")
    ap.add_argument("--json", default=None, metavar="FILE",
                    help="default bench/results/runtime.json")
    ap.add_argument("--dir", default="/var/tmp", help="where the work directory goes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it mounts: sudo python3 bench/runtime_bench.py)",
              file=sys.stderr)
        return 2
    tree = Path(args.tree or ("/usr/share/doc" if args.quick else "/usr/share"))
    rounds = args.rounds or (2 if args.quick else 5)
    if not tree.is_dir():
        print(f"bench: {tree} is not a directory", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    private_namespace()
    try:
        return run(tree, rounds, args)
    except KeyboardInterrupt:
        print("\ninterrupted: every mount taken down, the work directory removed",
              file=sys.stderr)
        return 130


def run(tree: Path, rounds: int, args: argparse.Namespace) -> int:
    skipped = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-runtime-") as tmp, \
            contextlib.ExitStack() as stack:  # unwound first: every mount goes down
        root = Path(tmp)
        stack.callback(sweep, root)  # runs last
        eng = Engine(root / "data", root / "run")
        eng.data_dir.mkdir()
        t = time.perf_counter()
        eng.init(source_dir=tree)
        image = eng.store.image_path("base")
        size_mib = image.stat().st_size / (1 << 20)
        print(f"base image of {tree}: {size_mib:.0f} MiB in {time.perf_counter() - t:.1f} s")

        (root / "bare").mkdir()
        bare = Bare(root / "bare", image, stack)
        t = time.perf_counter()
        native = Native(root / "native", bare.root)
        sh(["cp", "-a", f"{bare.root}/.", str(native.root)])
        print(f"native copy: {time.perf_counter() - t:.1f} s")
        subjects: list[Subject] = [native, bare]

        ibi = IbiStack(eng, root / "ibi")
        ibi.root.mkdir()
        stack.callback(ibi.close)
        ibi.up()
        print(f"ibi stack: overlay -o {mounts.OVERLAY_OPTIONS}, upper and work on "
              f"{fs_type(eng.store.upper)} (it has one entry more: the /home ibi binds)")
        subjects.append(ibi)

        for label, (cmd, package, cls) in FUSE_TOOLS.items():
            if shutil.which(cmd) is None:
                print(f"skipped: {package} not installed (apt-get install {package})")
                skipped.append(label)
                continue
            s = cls(label, root / label, bare.root, root / "uppers" / label,
                    root / f"{label}.log")
            stack.callback(s.close)
            try:
                s.up()
            except (RuntimeError, OSError) as e:
                print(f"skipped: {label} does not mount here: {e}")
                skipped.append(label)
                continue
            subjects.append(s)

        counts = {s.name: common.lstat_all(s.root) for s in subjects}
        print("entries: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        files = spread(bare.root, CHANGE_FILES)
        native.sizes = {rel: os.lstat(native.root / rel).st_size for rel in files}
        print(f"{len(files)} image files appended to / deleted; {rounds} rounds", flush=True)

        rows = read_rows(subjects, rounds)
        rows += write_rows(subjects, rounds, files, eng.data_dir)
        params = {"tree": str(tree), "entries": counts[BASELINE], "rounds": rounds,
                  "quick": args.quick, "image_mib": round(size_mib, 1),
                  "data_fs": fs_type(eng.data_dir), "overlay_options": mounts.OVERLAY_OPTIONS,
                  "create_files": CREATE_FILES, "create_bytes": CREATE_BYTES,
                  "changed_files": len(files), "skipped": skipped,
                  "versions": {label: version([cmd, "--version"])
                               for label, (cmd, _p, _c) in FUSE_TOOLS.items()
                               if label not in skipped}}
    print()
    print(common.table(rows))
    common.write("runtime", rows, params, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
