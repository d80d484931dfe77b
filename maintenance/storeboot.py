"""The Store's files about booting: a mixin of maintenance.store.Store.

The kernels in place (``boot/kernels/<id>/``; a kernel's files are named in store.py) and,
in ``.root_images/``, the action queued for the next boot (``pending``), the settings
written by hand (``policy``: boot tries, retention), the stack on trial (``trial``), the
boots the initramfs counted for it (``boots``) and the last automatic fallback
(``fallback``). maintenance/store.py names these files and sets the paths this mixin uses;
what each record holds is parsed and rendered in maintenance/bootrecords.py. See
docs/FORMAT.md.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from .bootrecords import (
    fallback_from_doc,
    fallback_to_yaml,
    parse_pending,
    parse_policy,
    read_record,
    trial_from_doc,
    trial_to_yaml,
)
from .errors import BadName
from .fsio import TMP_PREFIX, atomic_write, dump_yaml, fsync_dir, read_store_text
from .model import Fallback, Policy, Trial
from .records import check_kernel_id


class StoreBoot:
    """List the kernels in place; read, write and clear the pending action, the policy, the
    trial, its boots and the fallback record (the paths are the Store's)."""

    root: Path
    kernels: Path
    pending_path: Path
    policy_path: Path
    trial_path: Path
    boots_path: Path
    fallback_path: Path

    # kernels in place (DATA/boot/kernels/<id>/; their files: Store.kernel_files)
    def kernel_ids(self) -> list[str]:
        """Kernel directories in place (not unfinished ``.tmp-`` ones)."""
        if not self.kernels.is_dir():
            return []
        out = []
        for p in self.kernels.iterdir():
            if p.is_dir() and not p.name.startswith("."):
                with contextlib.suppress(BadName):
                    out.append(check_kernel_id(p.name))
        return sorted(out)

    def stray_kernel_tmp(self) -> list[Path]:
        if not self.kernels.is_dir():
            return []
        return sorted(p for p in self.kernels.iterdir() if p.name.startswith(TMP_PREFIX))

    # pending: one action queued from a live system for the next boot
    def read_pending(self) -> dict[str, str] | None:
        try:
            text = read_store_text(self.pending_path)
        except FileNotFoundError:
            return None
        return parse_pending(text, self.pending_path.name)

    def write_pending(self, doc: dict[str, str]) -> None:
        atomic_write(self.pending_path, dump_yaml(doc))

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.pending_path.unlink()
            fsync_dir(self.root)

    # the settings: .root_images/policy, written by hand (every key optional)
    def read_policy(self) -> Policy:
        try:
            text = read_store_text(self.policy_path)
        except FileNotFoundError:
            return Policy()
        return parse_policy(text, self.policy_path.name)

    # boot counting: the trial (the engine), the boots counted (the initramfs)
    def read_trial(self) -> Trial | None:
        """The trial on record (None: none), whether or not it still holds (it holds while
        its ``stack`` is roottab)."""
        return read_record(self.trial_path, trial_from_doc, "ibi boot-ok --cancel forgets it")

    def write_trial(self, t: Trial) -> None:
        atomic_write(self.trial_path, trial_to_yaml(t))

    def clear_trial(self) -> None:
        """Forget the trial and its boots (the trial first: a power cut between the two
        leaves counted boots without a trial, which count for nothing)."""
        for p in (self.trial_path, self.boots_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        fsync_dir(self.root)

    def count_boots(self) -> int:
        """The boots the initramfs counted for the trial: one line each (``boot EPOCH``;
        a line cut short by a power cut still counts)."""
        try:
            text = read_store_text(self.boots_path)
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if line.strip())

    def read_fallback(self) -> Fallback | None:
        return read_record(self.fallback_path, fallback_from_doc)

    def write_fallback(self, f: Fallback) -> None:
        atomic_write(self.fallback_path, fallback_to_yaml(f))

    def clear_fallback(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fallback_path.unlink()
            fsync_dir(self.root)
