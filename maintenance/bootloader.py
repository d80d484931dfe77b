"""GRUB's menu for a machine set up by ``ibi install``: DATA/boot/grub/grub.cfg.

``ibi install`` puts GRUB's files on the data partition (``grub-install
--boot-directory=DATA/boot``), so GRUB reads a menu that ibi alone writes, from the boot
plan (:mod:`maintenance.bootplan`), whenever roottab or the images change:

- the active stack (the default entry),
- Maintenance Mode (``rd.ibi.maintenance``; Debian's ``recovery`` class),
- a Live Review of each restore point (``rd.ibi.review=NAME``), newest first,
- the original system, untouched since the install (its own GRUB menu, by ``configfile``).

The settings the entries need are recorded by the installer in DATA/boot/bootloader.yaml.
A one-time entry (``grub-editenv DATA/boot/grub/grubenv set next_entry=ID``) is honoured,
as Debian's grub.cfg does.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from . import bootplan, kernels
from .errors import StoreError
from .fsio import atomic_write, load_yaml, read_store_text
from .model import KernelRef
from .run import run, which
from .store import BOOT, INITRD, KERNELS, VMLINUZ, Store

GRUB_DIR = "grub"
GRUB_CFG = "grub.cfg"
GRUBENV = "grubenv"


@dataclass(frozen=True)
class Original:
    """The system ibi was installed from, left untouched: its GRUB menu."""

    device: str  # e.g. /dev/vda1 (for the title only)
    fs_uuid: str  # the file system holding its grub.cfg
    config: str  # that grub.cfg's path on it, e.g. /boot/grub/grub.cfg


@dataclass(frozen=True)
class Settings:
    data_spec: str  # rd.ibi.data=, e.g. UUID=…
    data_fs_uuid: str  # for GRUB's search
    kernel: str  # the kernel ibi install booted; for stacks whose images name no
    # kernel (made before ibi kept kernels): DATA/boot/vmlinuz-<kernel>, initrd.img-<kernel>
    cmdline: str = ""  # more kernel parameters (console=…)
    distributor: str = "Debian GNU/Linux"
    timeout: int = 5
    terminal: str = ""  # a GRUB serial command ("serial --unit=0 --speed=115200") or ""
    terminals: str = "serial console"  # GRUB_TERMINAL: where the menu is shown and read
    original: Original | None = None


def read_settings(st: Store) -> Settings:
    path = st.bootloader_conf
    try:
        doc = load_yaml(read_store_text(path))
        if not isinstance(doc, dict):
            raise ValueError("not a mapping")
        orig = doc.get("original")
        return Settings(
            data_spec=str(doc["data_spec"]), data_fs_uuid=str(doc["data_fs_uuid"]),
            kernel=str(doc["kernel"]), cmdline=str(doc.get("cmdline") or ""),
            distributor=str(doc.get("distributor") or "Debian GNU/Linux"),
            timeout=int(doc.get("timeout", 5)), terminal=str(doc.get("terminal") or ""),
            terminals=str(doc.get("terminals") or "serial console"),
            original=Original(str(orig["device"]), str(orig["fs_uuid"]), str(orig["config"]))
            if isinstance(orig, dict) else None,
        )
    except FileNotFoundError:
        raise StoreError(f"{path} is missing: this machine was not set up by ibi install") \
            from None
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as e:
        raise StoreError(f"{path.name}: unreadable ({' '.join(str(e).split())})") from None


def write_settings(st: Store, s: Settings) -> None:
    st.boot.mkdir(exist_ok=True)
    doc = {"format": 1, **asdict(s)}
    atomic_write(st.bootloader_conf, yaml.safe_dump(doc, sort_keys=False))


def _q(text: str) -> str:
    """A GRUB single-quoted word."""
    return "'" + text.replace("'", "'\\''") + "'"


def _arg(word: str) -> str:
    """A kernel parameter as a GRUB word: quoted unless plainly safe."""
    return word if re.fullmatch(r"[A-Za-z0-9_.,:=/+@%-]+", word) else _q(word)


def entry_kernels(st: Store, plan: bootplan.BootPlan) -> dict[str, KernelRef | None]:
    return kernels.entry_kernels(st, plan.normal, plan.fallback,
                                 ((r.name, r.stack) for r in plan.reviews))


def render(plan: bootplan.BootPlan, s: Settings,
           kmap: dict[str, KernelRef | None] | None = None) -> str:
    """GRUB's menu; ``kmap``: the kernel of each entry (see kernels.entry_kernels), None
    or missing for the kernel ibi install booted."""
    kmap = kmap or {}
    base_args = " ".join(_arg(w) for w in [f"rd.ibi.data={s.data_spec}", *s.cmdline.split()])
    out = [
        "# GRUB menu of an ibi machine, written by ibi (maintenance/bootloader.py) whenever",
        "# the image stack changes: do not edit. Settings: DATA/boot/bootloader.yaml.",
        "if [ -s $prefix/grubenv ]; then",
        "  load_env",
        "fi",
        'if [ "${next_entry}" ]; then',
        '  set default="${next_entry}"',
        "  set next_entry=",
        "  save_env next_entry",
        "else",
        "  set default=ibi",
        "fi",
        f"set timeout={s.timeout}",
        "set timeout_style=menu",
    ]
    if s.terminal:
        out += [s.terminal, f"terminal_input {s.terminals}", f"terminal_output {s.terminals}"]
    out += [
        "insmod part_msdos",
        "insmod part_gpt",
        "insmod ext2",
        f"search --no-floppy --fs-uuid --set=root {s.data_fs_uuid}",
        "",
    ]

    def entry(title: str, ident: str, args: str, classes: str,
              kernel: KernelRef | None) -> None:
        if kernel is None:
            version, vmlinuz, initrd = s.kernel, f"/boot/vmlinuz-{s.kernel}", \
                f"/boot/initrd.img-{s.kernel}"
        else:
            where = f"/{BOOT}/{KERNELS}/{kernel.id}"
            version, vmlinuz, initrd = kernel.version, f"{where}/{VMLINUZ}", f"{where}/{INITRD}"
        out.extend([
            f"menuentry {_q(title)} --id {ident} {classes} {{",
            f"  echo {_q(f'Loading Linux {version} ...')}",
            f"  linux {vmlinuz} {base_args} {args}".rstrip(),
            f"  initrd {initrd}",
            "}",
        ])

    os_classes = "--class debian --class gnu-linux --class gnu --class os"
    if plan.normal:
        top = plan.normal[-1]
        n = len(plan.normal)
        entry(f"{s.distributor} (ibi: {n} image{'s' if n != 1 else ''}, top {top})", "ibi",
              "", os_classes, kmap.get("ibi"))
    else:  # the initramfs falls back (roottab.prev, or the menu with the error)
        entry(f"{s.distributor} (ibi: the stack needs attention)", "ibi", "", os_classes,
              kmap.get("ibi"))
    entry(f"{s.distributor} (ibi Maintenance Mode)", "ibi-maintenance",
          "rd.ibi.maintenance", "--class recovery " + os_classes, kmap.get("ibi-maintenance"))
    for r in plan.reviews:
        entry(f"ibi Live Review of {r.name} ({r.kind}, {r.created} UTC)",
              f"ibi-review-{r.name}", f"rd.ibi.review={r.name}", "--class recovery --class os",
              kmap.get(f"review:{r.name}"))
    if s.original:
        o = s.original
        out.extend([
            f"menuentry {_q(f'Original system on {o.device} (before ibi install)')} "
            f"--id ibi-original {os_classes} {{",
            f"  search --no-floppy --fs-uuid --set=root {o.fs_uuid}",
            f"  configfile {o.config}",
            "}",
        ])
    return "\n".join(out) + "\n"


def cfg_path(st: Store) -> Path:
    return st.boot / GRUB_DIR / GRUB_CFG


def write_grub_cfg(st: Store) -> bool:
    """Write GRUB's menu if it changed (temp file, fsync, rename); returns whether it was."""
    plan = bootplan.build(st)
    text = render(plan, read_settings(st), entry_kernels(st, plan))
    path = cfg_path(st)
    with contextlib.suppress(OSError):
        if path.read_bytes() == text.encode():
            return False
    path.parent.mkdir(parents=True, exist_ok=True)
    check = shutil.which("grub-script-check")
    if check:  # never put a menu GRUB cannot parse in place of a working one
        probe = path.with_name(f".check-{GRUB_CFG}")
        probe.write_text(text)
        try:
            r = run([check, str(probe)], check=False)
        finally:
            probe.unlink()
        if r.returncode != 0:
            raise StoreError(f"the GRUB menu ibi rendered does not parse: "
                             f"{(r.stdout + r.stderr).strip()}")
    atomic_write(path, text)
    return True


def set_next_entry(st: Store, ident: str) -> None:
    """Make GRUB boot entry ``ident`` once, at the next boot (``grub-editenv grubenv set
    next_entry=ID``, which the menu ibi writes honours)."""
    cfg = cfg_path(st)
    try:
        if f"--id {ident} " not in cfg.read_text(encoding="utf-8"):
            raise StoreError(f"GRUB's menu has no entry {ident!r}")
    except FileNotFoundError:
        raise StoreError(f"{cfg} is missing: this machine was not set up by ibi install") \
            from None
    run([which("grub-editenv"), str(cfg.with_name(GRUBENV)), "set", f"next_entry={ident}"])
