#!/usr/bin/env python3
"""Boot to login with and without ibi, and the initramfs hook's own cost when maintenance is
not requested (issue 12). Run by hand, as root; not part of the test suite.

1. Boot to login. The installed disk of the VM tests (tests/vm/installed.py: a conventional
   Debian disk after ``dpkg -i`` of the package and ``ibi install``, cached in
   /var/cache/ibi-vm and built if missing; --disk takes another) boots through its GRUB,
   --boots times each, interleaved (ibi, original; original, ibi; ...): GRUB's default entry
   (the ibi stack) and "Original system" (then its own default entry: the machine without
   ibi). Every boot starts from a fresh qcow2 overlay of the disk, as a VM test's does. A
   boot's time is the VM tests' (tests/vm/qemu.py): qemu's start to the autologin root shell
   on the serial console. Each GRUB menu gets its key at once (no countdown), so the time
   from that key to the shell is given too. Then, in the guest: ``systemd-analyze time``
   (the kernel/initrd/userspace split; firmware and loader only under EFI) once the boot's
   jobs are done. And from the console (systemd.show_status=1), on the host's clock (the
   guest's runs slow and uneven under TCG): the kernel's start of /init to the initrd's root
   file system, and the units that make /sysroot (ibi-sysroot.service; for the original
   system systemd-fsck-root.service to sysroot.mount).

2. The hook's own cost. What the guest logs of it (systemd's start and end of
   ibi-sysroot.service; ibi_log's "data partition ... mounted" and "booting the stack" in the
   kernel log) spans the mounts and, in these VMs, the wait for the disk, on an emulated
   CPU. So it is measured on the host: the default GRUB entry's initramfs is unpacked from
   the installed disk's data partition, and in a chroot of it (its dash, dracut-lib.sh,
   dracut-getarg, findmnt, od, stat, cksum ...) ``ibi-assemble sysroot`` runs as
   ibi-sysroot.service runs it, with the entry's kernel command line as /proc/cmdline and a
   copy of the disk's store on /run/ibi/data, but ``mount`` and ``umount`` replaced by a
   no-op: the whole normal boot path (the command line, the boot plan against roottab, the
   boot count, every image's size and superblock, the overlay's options, /home) without the
   mounts. The no-op mount commands' own subshell and process are measured apart and taken
   out; the cmdline hook's increment (parse-ibi.sh, sourced by dracut-cmdline) is added. The
   store's pages are evicted before each timed run (a boot reads them cold). Also for an
   engine-made store --hook-images deep.

Rows (bench/common.py): "boot to login" ibi against the original system (no target), the
same from GRUB's key, systemd-analyze's phases, the initrd's /init to its root file system
and the units making /sysroot, and "initramfs hook, maintenance not requested" against its
target (< 100 ms).

    sudo python3 bench/boot_bench.py [--boots 2] [--hook-runs 30] [--hook-images 10]
                                     [--disk INSTALLED.qcow2] [--json FILE]

Each boot takes 60-250 s under TCG (software emulation); --boots 0 measures the hook alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests/vm"))

import common  # noqa: E402
import guest as guestmod  # noqa: E402
import installed as installedmod  # noqa: E402
import qemu  # noqa: E402

IBI_ENTRY = "(ibi: "  # GRUB's default entry: "Debian GNU/Linux (ibi: 1 image, top base)"
ORIGINAL_ENTRY = "Original system"
SUBJECTS = {"ibi": "ibi (GRUB default entry)", "original": "original system (no ibi)"}
# console lines (systemd.show_status=1) of the initrd: the kernel starts /init, the units
# that make /sysroot start and end, the root file system is there
INIT_STARTED = r"Run /init as init process"
ROOT_FS = r"Reached target initrd-root-fs\.target"
ROOT_UNITS = {"ibi": (r"Starting ibi-sysroot\.service", r"Finished ibi-sysroot\.service"),
              "original": (r"Starting systemd-fsck-root\.service|Mounting sysroot\.mount",
                           r"Mounted sysroot\.mount")}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MOUNT_LOG = "/run/ibi-bench-mounts"
MOUNT_STUB = f"""#!/bin/sh
# boot_bench.py: no mounts here (the hook's own cost, not the mounts'); the call is logged
echo "${{0##*/}} $*" >> {MOUNT_LOG}
"""


# --- 1. boots through GRUB -----------------------------------------------------------------

def span_seconds(text: str) -> float:
    """systemd's time span ("1min 39.657s", "877ms", "1h 2min 3s") in seconds."""
    units = {"h": 3600.0, "min": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
    total = 0.0
    for tok in text.split():
        m = re.fullmatch(r"([\d.]+)(h|min|ms|us|µs|s)", tok)
        if not m:
            raise ValueError(f"not a time span: {text!r}")
        total += float(m.group(1)) * units[m.group(2)]
    return total


def parse_analyze(out: str) -> dict[str, float]:
    """``systemd-analyze time``: {"kernel": s, "initrd": s, "userspace": s, "total": s,
    "<target> in userspace": s}; empty when the boot is not finished."""
    res: dict[str, float] = {}
    m = re.search(r"Startup finished in (.*?)= (.+?)\s*$", out, re.M)
    if not m:
        return res
    for span, phase in re.findall(r"((?:[\d.]+(?:h|min|ms|us|µs|s)\s+)+)\((\w+)\)",
                                  m.group(1)):
        res[phase] = span_seconds(span)
    res["total"] = span_seconds(m.group(2))
    t = re.search(r"(\S+\.target) reached after (.+?) in userspace", out)
    if t:
        res[f"{t.group(1)} in userspace"] = span_seconds(t.group(2))
    return res


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


class Stamped:
    """pexpect's log file for a boot's console, which also notes when (host clock, seconds
    since qemu's start) each console line arrived: the guest's own clock runs slow and
    uneven under TCG, the host's does not."""

    def __init__(self, inner: Any, started: float) -> None:
        self.inner = inner
        self.started = started
        self.part = ""
        self.lines: list[tuple[float, str]] = []

    def write(self, data: str) -> None:
        self.inner.write(data)
        now = time.monotonic() - self.started
        *done, self.part = (self.part + data).split("\n")
        self.lines.extend((now, ANSI.sub("", ln)) for ln in done)

    def flush(self) -> None:
        self.inner.flush()

    def first(self, pattern: str) -> float | None:
        """When the first line matching ``pattern`` (a regex) had arrived."""
        rx = re.compile(pattern)
        return next((round(t, 2) for t, ln in self.lines if rx.search(ln)), None)


def boot_once(kind: str, base: Path, work: Path, logs: Path, name: str) -> dict[str, Any]:
    """One boot of ``kind`` ("ibi" or "original") on a fresh overlay of ``base``."""
    disk = work / f"{name}.qcow2"
    with contextlib.suppress(FileNotFoundError):
        disk.unlink()
    guestmod.sh(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                 str(disk)])
    rec: dict[str, Any] = {"kind": kind, "name": name}
    path = [IBI_ENTRY] if kind == "ibi" else [ORIGINAL_ENTRY, ""]
    stamps: list[Stamped | None] = [None]

    def pick(vm: qemu.VM) -> None:
        titles = []
        for title in path:
            if title:
                titles.append(qemu.grub_choose(vm, title))
            else:  # the original system's own menu: its default entry (the first)
                entries = qemu.grub_menu(vm)
                titles.append(qemu.grub_choose(vm, entries[0]))
        rec["grub_entries"] = titles
        rec["grub_s"] = round(time.monotonic() - vm.started, 2)
        assert vm.proc is not None
        stamps[0] = vm.proc.logfile_read = Stamped(vm.proc.logfile_read, vm.started)

    vm = qemu.VM(None, None, disk, logs, name, bootloader=pick)
    try:
        rec["boot_s"] = vm.boot()
        rec["after_grub_s"] = round(rec["boot_s"] - rec["grub_s"], 2)
        rec["log"] = str(vm.log_path)
        if kind == "ibi":
            mode = vm.check("cat /run/ibi/mode")
            assert mode == "normal roottab", f"{name}: /run/ibi/mode is {mode!r}"
        else:
            root = vm.check("findmnt -n -o SOURCE,FSTYPE /").split()
            assert root == ["/dev/vda1", "ext4"], f"{name}: / is {root}"
            assert vm.run("test -e /run/ibi/mode")[0] == 1, f"{name}: /run/ibi/mode exists"
        con = stamps[0]
        assert con is not None
        t_init, t_root = con.first(INIT_STARTED), con.first(ROOT_FS)
        t0, t1 = (con.first(p) for p in ROOT_UNITS[kind])
        rec["initrd_root_s"] = None if t_init is None or t_root is None \
            else round(t_root - t_init, 2)
        rec["root_unit_s"] = None if t0 is None or t1 is None else round(t1 - t0, 2)
        rec["console_s"] = {"init": t_init, "unit start": t0, "unit end": t1,
                            "initrd-root-fs.target": t_root}
        # the data partition's disk appeared while ibi-sysroot.service waited for it?
        t_disk = con.first(r"\] +vda: vda1 vda2")
        rec["disk_s"] = t_disk
        rec["cmdline"] = vm.check("cat /proc/cmdline")
        # systemd-analyze reports once the boot's jobs are done
        rec["state"] = vm.run("timeout 600 systemctl is-system-running --wait",
                              timeout=660)[1].strip()
        rec["analyze_out"] = vm.run("systemd-analyze time | cat", timeout=120)[1]
        rec["analyze"] = parse_analyze(rec["analyze_out"])
        vm.poweroff()
    finally:
        vm._kill()
        disk.unlink(missing_ok=True)
    return rec


# --- 2. the hook on the host -------------------------------------------------------------

CPIO_MAGIC = (b"070701", b"070702")
DECOMPRESS = {b"\x28\xb5\x2f\xfd": ["zstd", "-dc"], b"\x1f\x8b": ["gzip", "-dc"],
              b"\xfd7zXZ": ["xz", "-dc"], b"\x02\x21\x4c\x18": ["lz4", "-dc"]}


def unpack_initramfs(data: bytes, dest: Path) -> None:
    """Unpack an initramfs (cpio "newc" archives, the later ones compressed) into ``dest``:
    directories, regular files and symbolic links (no device nodes)."""
    i = 0
    while i < len(data):
        head = data[i:i + 6]
        if head in CPIO_MAGIC:
            h = data[i:i + 110]
            mode, fsize, nsize = int(h[14:22], 16), int(h[54:62], 16), int(h[94:102], 16)
            name = data[i + 110:i + 110 + nsize - 1].decode()
            off = (i + 110 + nsize + 3) & ~3
            body = data[off:off + fsize]
            i = (off + fsize + 3) & ~3
            if name == "TRAILER!!!" or name.startswith("/") or ".." in name.split("/"):
                continue
            p = dest / name
            kind = mode & 0o170000
            if kind == 0o040000:
                p.mkdir(parents=True, exist_ok=True)
                p.chmod(mode & 0o7777)
            elif kind == 0o120000:
                p.parent.mkdir(parents=True, exist_ok=True)
                if not p.is_symlink() and not p.exists():
                    os.symlink(body.decode(), p)
            elif kind == 0o100000:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(body)
                p.chmod(mode & 0o7777)
        elif head[:1] == b"\0":
            i += 1  # padding between archives
        else:
            for magic, argv in DECOMPRESS.items():
                if data[i:].startswith(magic):
                    out = subprocess.run(argv, input=data[i:], capture_output=True,
                                         check=True).stdout
                    unpack_initramfs(out, dest)
                    return
            raise ValueError(f"unknown data in the initramfs at byte {i}: {head!r}")


def default_entry(data: Path) -> tuple[Path, str]:
    """The ibi GRUB entry (--id ibi) of DATA/boot/grub/grub.cfg: its initrd (a path on the
    data partition) and the kernel command line it gives (BOOT_IMAGE= as GRUB adds it)."""
    cfg = (data / "boot/grub/grub.cfg").read_text()
    m = re.search(r"^menuentry .*--id ibi .*?\{\n(.*?)^\}", cfg, re.M | re.S)
    if not m:
        raise RuntimeError(f"no '--id ibi' entry in {data}/boot/grub/grub.cfg")
    linux = re.search(r"^\s*linux\s+(\S+)\s*(.*)$", m.group(1), re.M)
    initrd = re.search(r"^\s*initrd\s+(\S+)", m.group(1), re.M)
    if not linux or not initrd:
        raise RuntimeError(f"the ibi entry has no linux/initrd line:\n{m.group(1)}")
    return data / initrd.group(1).lstrip("/"), f"BOOT_IMAGE={linux.group(1)} {linux.group(2)}"


def data_dev(cmdline: str) -> str:
    """rd.ibi.data= as dracut's label_uuid_to_dev turns it into a device path."""
    m = re.search(r"(?:^|\s)rd\.ibi\.data=(\S+)", cmdline)
    if not m:
        raise RuntimeError(f"no rd.ibi.data= in the entry's command line: {cmdline}")
    spec = m.group(1)
    for key, sub in (("LABEL=", "by-label"), ("UUID=", "by-uuid"),
                     ("PARTUUID=", "by-partuuid"), ("PARTLABEL=", "by-partlabel")):
        if spec.startswith(key):
            return f"/dev/disk/{sub}/{spec[len(key):]}"
    return spec if spec.startswith("/dev/") else f"/dev/disk/by-label/{spec}"


def prepare_tree(tree: Path, initrd: Path, cmdline: str) -> None:
    """The unpacked initramfs, made runnable in a chroot: mount/umount no-ops, /dev with
    null, a regular file for the console and the kernel log, and the data partition's node
    where rd.ibi.data= points (so ibi_wait_dev finds it at once, as after udev)."""
    unpack_initramfs(initrd.read_bytes(), tree)
    for tool in ("mount", "umount"):
        for d in ("usr/bin", "usr/sbin", "bin", "sbin"):
            p = tree / d / tool
            if p.is_file() and not p.is_symlink():
                p.unlink()
                p.write_text(MOUNT_STUB)
                p.chmod(0o755)
    dev = tree / "dev"
    dev.mkdir(exist_ok=True)
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("urandom", 1, 9)):
        with contextlib.suppress(FileExistsError):
            os.mknod(dev / name, 0o20666, os.makedev(major, minor))
    for name in ("console", "kmsg"):
        (dev / name).write_text("")
    with contextlib.suppress(FileExistsError):
        os.mknod(dev / "vda2", 0o60660, os.makedev(252, 2))
    target = tree / data_dev(cmdline).lstrip("/")
    if target != dev / "vda2":
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink(os.path.relpath(dev / "vda2", target.parent), target)
    (tree / "proc").mkdir(exist_ok=True)
    (tree / "bench-cmdline").write_text(cmdline.strip() + "\n")
    # the assembled root the checks look at (the overlay is not mounted)
    (tree / "sysroot/sbin").mkdir(parents=True, exist_ok=True)
    (tree / "sysroot/sbin/init").write_text("#!/bin/sh\n")
    (tree / "sysroot/sbin/init").chmod(0o755)
    (tree / "sysroot/home").mkdir(exist_ok=True)
    (tree / "run/ibi").mkdir(parents=True, exist_ok=True)


def copy_store(src: Path, dest: Path) -> None:
    """What the hook reads of a data partition: the store, the layer (its id) and /home."""
    shutil.copytree(src / ".root_images", dest / ".root_images")
    for d in ("layer/upper", "layer/work", "home"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    if (src / "layer/id").is_file():
        shutil.copy2(src / "layer/id", dest / "layer/id")


def engine_store(dest: Path, work: Path, images: int) -> None:
    """A store of ``images`` images (a base and small incrementals) made by the engine."""
    from maintenance import squash
    from maintenance.engine import Engine
    from maintenance.model import Kind

    tree = work / "tree"
    (tree / "sbin").mkdir(parents=True)
    (tree / "sbin/init").write_text("#!/bin/sh\n")
    (tree / "sbin/init").chmod(0o755)
    (tree / "etc").mkdir()
    (tree / "etc/hostname").write_text("bench\n")
    eng = Engine(dest, work / "run")
    dest.mkdir(parents=True)
    eng.init(source_dir=tree)
    tab = eng.roottab()
    while len(tab) < images:
        i = len(tab)
        layer = work / f"layer{i}"
        (layer / "etc").mkdir(parents=True)
        (layer / "etc" / f"point-{i}").write_text(f"{i}\n")
        tmpf = eng.store.tmp_path(f"p{i}", ".sqfs")
        squash.mksquashfs(layer, tmpf)
        eng._commit_image(tmpf, f"p{i}", Kind.INCREMENTAL, f"point {i}", tuple(tab), tab[-1],
                          "zstd", None)
        tab.append(f"p{i}")
    eng.store.write_roottab(tab)
    eng.refresh_boot_files()


def store_files(data: Path) -> list[Path]:
    return [p for p in [*(data / ".root_images").iterdir(), data / "layer/id"] if p.is_file()]


def evict(files: list[Path]) -> None:
    """Drop these files' pages from the page cache (the store as a boot finds it)."""
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def snapshot(tree: Path) -> set[Path]:
    """The paths the cmdline hook may add to (dracut's hooks, systemd's units)."""
    return {p for d in ("lib/dracut/hooks", "etc/systemd/system", "etc/udev/rules.d")
            for p in (tree / d).rglob("*")} if tree.exists() else set()


def clean_to(tree: Path, before: set[Path]) -> None:
    for p in sorted(snapshot(tree) - before, key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def hook_inner(spec_path: Path) -> int:
    """In a private mount namespace (``unshare --mount``): mount /proc in the tree with the
    entry's command line over /proc/cmdline, then time the hook. Writes the figures to
    spec["out"]."""
    spec = json.loads(spec_path.read_text())
    tree = Path(spec["tree"])
    runs = int(spec["runs"])
    guestmod.sh(["mount", "--make-rprivate", "/"])
    guestmod.sh(["mount", "-t", "proc", "proc", str(tree / "proc")])
    guestmod.sh(["mount", "--bind", str(tree / "bench-cmdline"), str(tree / "proc/cmdline")])
    run_ibi = tree / "run/ibi"
    data = run_ibi / "data"
    mounts = tree / MOUNT_LOG.lstrip("/")

    def chroot(*argv: str, env: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["chroot", str(tree), "/usr/bin/env", "-i", PATH_ENV, *env,
                               *argv], capture_output=True, text=True)

    def reset() -> None:
        (run_ibi / "mode").unlink(missing_ok=True)
        shutil.rmtree(run_ibi / "lower", ignore_errors=True)
        mounts.write_text("")

    def sysroot() -> tuple[float, subprocess.CompletedProcess[str]]:
        t = time.perf_counter()
        r = chroot("/usr/sbin/ibi-assemble", "sysroot", env=("NEWROOT=/sysroot",))
        return time.perf_counter() - t, r

    def checked(r: subprocess.CompletedProcess[str], what: str) -> None:
        mode = (run_ibi / "mode").read_text().strip() if (run_ibi / "mode").exists() else ""
        if r.returncode != 0 or mode != "normal roottab":
            raise RuntimeError(f"ibi-assemble sysroot ({what}) exited {r.returncode}, mode "
                               f"{mode!r}:\n{r.stdout}{r.stderr}\nkmsg: "
                               f"{(tree / 'dev/kmsg').read_text()}")

    out: dict[str, Any] = {"stores": {}}
    for label, src in spec["stores"].items():
        os.rename(src, data)
        try:
            files = store_files(data)
            reset()
            _, r = sysroot()  # warm-up, and what it did
            checked(r, label)
            res: dict[str, Any] = {"mounts": mounts.read_text().splitlines(),
                                   "kmsg": (tree / "dev/kmsg").read_text().strip(),
                                   "warm": [], "cold": []}
            for _ in range(runs):
                for how in ("cold", "warm"):
                    reset()
                    if how == "cold":
                        evict(files)
                    dt, r = sysroot()
                    checked(r, f"{label}, {how}")
                    res[how].append(dt)
            out["stores"][label] = res
        finally:
            os.rename(data, src)
    # the cmdline hook: dracut-cmdline has dracut-lib.sh sourced already; its increment
    hook = next(iter(sorted(tree.glob("**/hooks/cmdline/*parse-ibi.sh"))), None)
    lib_only: list[float] = []
    with_hook: list[float] = []
    exec_only: list[float] = []
    if hook is not None:
        rel = "/" + str(hook.relative_to(tree))
        env = ("DRACUT_SYSTEMD=1",)
        before = snapshot(tree)
        for _ in range(runs):
            for argv, times in (([". /lib/dracut-lib.sh"], lib_only),
                                ([f". /lib/dracut-lib.sh; . {rel}"], with_hook)):
                clean_to(tree, before)
                t = time.perf_counter()
                r = chroot("/bin/sh", "-c", argv[0], env=env)
                times.append(time.perf_counter() - t)
                if r.returncode != 0:
                    raise RuntimeError(f"sh -c {argv[0]!r} exited {r.returncode}: {r.stderr}")
        clean_to(tree, before)
        out["cmdline_hook"] = rel
    # what each (no-op) mount command costs the script: a subshell and a process, as in
    # `_out=$(mount ... 2>&1)`; taken out of the hook's figure (the mounts are not its own)
    calls = 20
    loop = "i=0; while [ $i -lt {n} ]; do {body}; i=$((i + 1)); done"
    mount_call: list[float] = []
    for _ in range(runs):
        tt = []
        for body in ('_out=$(mount -o ro /dev/null /nowhere 2>&1)', ":"):
            t = time.perf_counter()
            chroot("/bin/sh", "-c", loop.format(n=calls, body=body))
            tt.append(time.perf_counter() - t)
        mount_call.append((tt[0] - tt[1]) / calls)
        t = time.perf_counter()
        chroot("/usr/bin/true")
        exec_only.append(time.perf_counter() - t)
    mounts.write_text("")
    out.update(lib_only=lib_only, with_hook=with_hook, exec_only=exec_only,
               mount_call=mount_call)
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


def measure_hook(installed: Path, work: Path, runs: int, images: int) -> dict[str, Any]:
    """The hook's figures (see the module's docstring, 2.), from a raw copy of the
    installed disk whose data partition is mounted on the host (installed.planted_disk)."""
    tree = work / "initramfs"
    stores = work / "stores"
    stores.mkdir()
    got: dict[str, Any] = {}

    def take(d: Path) -> None:
        initrd, cmdline = default_entry(d)
        prepare_tree(tree, initrd, cmdline)
        copy_store(d, stores / "installed")
        normal = [ln.split()[1:] for ln in (d / ".root_images/bootplan").read_text()
                  .splitlines() if ln.startswith("normal ")]
        got.update(initrd=str(initrd.relative_to(d)), cmdline=cmdline,
                   images=len(normal[0]) if normal else 0)

    raw = installedmod.planted_disk(installed, work / "installed-copy.raw", take)
    raw.unlink()
    spec: dict[str, Any] = {"tree": str(tree), "runs": runs, "out": str(work / "hook.json"),
                            "stores": {"installed": str(stores / "installed")}}
    if images > 1:
        engine_store(stores / "deep", work / "engine", images)
        spec["stores"]["deep"] = str(stores / "deep")
    for p in stores.rglob("*"):  # on disk before the cold runs evict them
        if p.is_file():
            evict([p])
    (work / "hook-spec.json").write_text(json.dumps(spec))
    subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                    str(Path(__file__).resolve()), "--hook-inner",
                    str(work / "hook-spec.json")], check=True)
    got.update(json.loads((work / "hook.json").read_text()))
    return got


# --- rows ----------------------------------------------------------------------------------

def med(xs: list[float]) -> float:
    return statistics.median(xs)


def fmt(xs: list[float]) -> str:
    return ", ".join(f"{x:.1f}" for x in xs)


def boot_rows(boots: list[dict[str, Any]], accel: str) -> list[dict[str, Any]]:
    ok = {k: [b for b in boots if b["kind"] == k and "error" not in b] for k in SUBJECTS}
    if not ok["ibi"] or not ok["original"]:
        return []
    rows = []
    where = f"qemu {accel.upper()}, 1 vCPU, 1 GiB; a fresh overlay of the installed disk each"
    for case, key, how in (
            ("boot to login", "boot_s", "qemu's start to the autologin root shell on the "
             "serial console (as tests/vm measures a boot), GRUB's menus answered at once"),
            ("boot to login from GRUB's key", "after_grub_s", "the last GRUB key (Enter) to "
             "the root shell: without the menus (the original system has two, ibi's then "
             "its own)")):
        a = [b[key] for b in ok["ibi"]]
        o = [b[key] for b in ok["original"]]
        va, vo = med(a), med(o)
        rows.append(common.row(
            case, SUBJECTS["ibi"], va, baseline=SUBJECTS["original"], baseline_value=vo,
            note=f"{how}; median of {len(a)}+{len(o)} interleaved boots (ibi: {fmt(a)} s; "
                 f"original: {fmt(o)} s); ratio {va / vo:.2f}, difference {va - vo:+.1f} s; "
                 f"{where}"))
    phases = [p for p in ("firmware", "loader", "kernel", "initrd", "userspace",
                          "graphical.target in userspace", "multi-user.target in userspace",
                          "total")
              if all(p in b.get("analyze", {}) for b in ok["ibi"] + ok["original"])]
    for p in phases:
        a = [b["analyze"][p] for b in ok["ibi"]]
        o = [b["analyze"][p] for b in ok["original"]]
        rows.append(common.row(
            f"systemd-analyze: {p}", SUBJECTS["ibi"], med(a), baseline=SUBJECTS["original"],
            baseline_value=med(o),
            note=f"in the guest, `systemd-analyze time` once its jobs were done (the guest's "
                 f"clock{', under TCG' if accel == 'tcg' else ''}); ibi: {fmt(a)} s, "
                 f"original: {fmt(o)} s; difference {med(a) - med(o):+.1f} s"))
    clock = f"the host's clock, when each console line arrived ({accel.upper()})"
    a = [b["initrd_root_s"] for b in ok["ibi"] if b.get("initrd_root_s") is not None]
    o = [b["initrd_root_s"] for b in ok["original"] if b.get("initrd_root_s") is not None]
    if a and o:
        rows.append(common.row(
            "initrd: /init to the root fs", SUBJECTS["ibi"], med(a),
            baseline=SUBJECTS["original"], baseline_value=med(o),
            note=f"the kernel's 'Run /init' to systemd's 'Reached target "
                 f"initrd-root-fs.target' on the console, {clock}: finding the disk, then "
                 f"assembling the stack (ibi) or fsck and mounting ext4 (original); ibi: "
                 f"{fmt(a)} s, original: {fmt(o)} s; difference {med(a) - med(o):+.1f} s"))
    a = [b["root_unit_s"] for b in ok["ibi"] if b.get("root_unit_s") is not None]
    o = [b["root_unit_s"] for b in ok["original"] if b.get("root_unit_s") is not None]
    if a and o:
        waits = [round(b["disk_s"] - b["console_s"]["unit start"], 1) for b in ok["ibi"]
                 if b.get("disk_s") and b["console_s"].get("unit start")
                 and b["disk_s"] > b["console_s"]["unit start"]]
        wait = (f"in {len(waits)} of {len(a)} ibi boots the unit started before the kernel "
                f"had found the disk and waited for it itself (ibi_wait_dev), the disk "
                f"appearing {fmt(waits)} s into it" if waits else
                "the disk was there when the unit started")
        rows.append(common.row(
            "initrd: units making /sysroot", "ibi-sysroot.service", med(a),
            baseline="fsck-root + sysroot.mount", baseline_value=med(o),
            note=f"systemd's Starting/Finished lines on the console, {clock}: "
                 f"ibi-sysroot.service, the whole hook with its mounts (data partition, "
                 f"images, overlay, /home; {fmt(a)} s) against the original system's "
                 f"systemd-fsck-root.service start to sysroot.mount mounted ({fmt(o)} s), "
                 f"which systemd starts only once the root device is there; {wait}"))
    return rows


def hook_rows(h: dict[str, Any], images: int) -> list[dict[str, Any]]:
    rows = []
    exec_s = med(h["exec_only"])
    call = med(h["mount_call"])
    cmd = (med(h["with_hook"]) - med(h["lib_only"])) if h.get("with_hook") else 0.0
    for label, res in h["stores"].items():
        n = h["images"] if label == "installed" else images
        cold, warm = med(res["cold"]), med(res["warm"])
        calls = len(res["mounts"])
        value = cold - calls * call + max(cmd, 0.0)
        subject = (f"installed store, {n} image{'s' if n != 1 else ''}" if label == "installed"
                   else f"engine store, {n} images")
        rows.append(common.row(
            "initramfs hook, maintenance not requested", subject, value,
            target="< 100 ms", max_value=0.1,
            note=f"measured on the host (the hook logs no timings; the guest runs under "
                 f"emulation): `ibi-assemble sysroot` as ibi-sysroot.service runs it, in a "
                 f"chroot of the ibi GRUB entry's own initramfs (its dash, dracut-lib.sh, "
                 f"dracut-getarg, findmnt, od, stat, cksum) with the entry's kernel command "
                 f"line, on a copy of the "
                 f"{'installed disk' + chr(39) + 's' if label == 'installed' else 'engine-made'}"
                 f" store, mount/umount replaced by a no-op: the whole normal boot path "
                 f"(cmdline, boot plan against roottab, boot count, each image's size and "
                 f"superblock, overlay options, /home), not the mounts. Median of "
                 f"{len(res['cold'])} runs, the store's pages evicted first: "
                 f"{cold * 1000:.1f} ms (warm {warm * 1000:.1f} ms; starting a process in "
                 f"the chroot alone {exec_s * 1000:.1f} ms, included), less its {calls} "
                 f"mount commands' subshell and process ({call * 1000:.2f} ms each), plus "
                 f"the cmdline hook parse-ibi.sh ({cmd * 1000:.1f} ms: its increment over "
                 f"sourcing dracut-lib.sh in dracut-cmdline)"))
    return rows


# --- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boots", type=int, default=2, help="boots of each entry (0: hook only)")
    ap.add_argument("--hook-runs", type=int, default=30)
    ap.add_argument("--hook-images", type=int, default=10,
                    help="also an engine-made store this deep (1: the installed one only)")
    ap.add_argument("--disk", type=Path, default=None,
                    help="an installed disk (qcow2) instead of tests/vm's cached one")
    ap.add_argument("--logs", type=Path, default=Path("/var/tmp/ibi-boot-bench"))
    ap.add_argument("--dir", default="/var/tmp")
    ap.add_argument("--json", default=None, metavar="FILE")
    ap.add_argument("--hook-inner", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hook_inner is not None:
        return hook_inner(args.hook_inner)
    if os.geteuid() != 0:
        print("bench: run as root (qemu, mounts, chroot)", file=sys.stderr)
        return 2
    missing = qemu.qemu_missing() or next(
        (f"{t} is missing" for t in ("unshare", "chroot", "zstd", "losetup", "sfdisk")
         if shutil.which(t) is None), None)
    if missing:
        print(f"bench: {missing}", file=sys.stderr)
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    if args.disk is not None:
        disk = args.disk.resolve()
    else:
        if guestmod.missing_tools():
            print(f"bench: missing {', '.join(guestmod.missing_tools())} (to build the "
                  "installed disk)", file=sys.stderr)
            return 2
        disk, _ = installedmod.installed_disk(args.logs)
    accel = "kvm" if qemu.use_kvm() else "tcg"
    print(f"installed disk: {disk} (qemu {accel})", flush=True)
    boots: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="ibi-boot-") as tmp:
        work = Path(tmp)
        for r in range(args.boots):
            order = ("ibi", "original") if r % 2 == 0 else ("original", "ibi")
            for kind in order:
                name = f"bench-{kind}-{r + 1}"
                try:
                    rec = boot_once(kind, disk, work, args.logs, name)
                except (qemu.BootError, AssertionError) as e:
                    rec = {"kind": kind, "name": name, "error": str(e)}
                    print(f"[bench] {name} FAILED: {e}", flush=True)
                boots.append(rec)
                if "error" not in rec:
                    a = rec["analyze"]
                    print(f"[bench] {name}: login after {rec['boot_s']} s ({rec['after_grub_s']}"
                          f" s after GRUB); systemd-analyze {a or rec['analyze_out']}; "
                          f"/init to root fs {rec['initrd_root_s']} s, /sysroot units "
                          f"{rec['root_unit_s']} s; console {rec['console_s']}, disk at "
                          f"{rec['disk_s']} s", flush=True)
                (args.logs / "boots.json").write_text(json.dumps(boots, indent=1))
        print("[bench] the hook on the host ...", flush=True)
        hook = measure_hook(disk, work, args.hook_runs, args.hook_images)
    (args.logs / "hook.json").write_text(json.dumps(hook, indent=1))
    for label, res in hook["stores"].items():
        print(f"[bench] hook, {label} store: what it mounted (no-op here):")
        for line in res["mounts"]:
            print(f"    {line}")
    rows = boot_rows(boots, accel) + hook_rows(hook, args.hook_images)
    params = {"boots": args.boots, "order": "interleaved, alternating which goes first",
              "hook_runs": args.hook_runs, "hook_images": args.hook_images,
              "accel": accel, "disk": str(disk), "vm": "1 vCPU, 1024 MiB, virtio disk",
              "entry_cmdline": hook.get("cmdline"), "initrd": hook.get("initrd"),
              "failed_boots": [b["name"] for b in boots if "error" in b],
              "logs": str(args.logs)}
    common.write("boot", rows, params, args.json)
    print(common.table(rows))
    return 0 if not params["failed_boots"] else 1


if __name__ == "__main__":
    sys.exit(main())
