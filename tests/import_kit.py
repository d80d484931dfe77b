"""The kit of ibi import's tests (for tests/test_import.py and tests/test_import_refusals.py;
not collected itself): the kernel version KV, a small root tree and its squashfs image, the
store's fingerprint, the ``store``, ``image``, ``_images_dir`` (autouse in the modules that
bind it) and ``ibi`` fixtures, ibi's command line in this process (Ibi), and what an imported
image must look like (assert_imported). A test module binds the fixtures to names of its
own, where pytest finds them."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from maintenance import cli, kernelstore, squash
from maintenance.engine import Engine
from maintenance.model import Kind
from tests.fstree import build_base

KV = "6.12.9+deb13-amd64"


# --------------------------------------------------------------------------- helpers

def add_kernel(root: Path, version: str) -> None:
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot" / f"vmlinuz-{version}").write_bytes(os.urandom(30_000))
    (root / "boot" / f"initrd.img-{version}").write_bytes(os.urandom(60_000))
    mod = root / "usr/lib/modules" / version / "kernel"
    mod.mkdir(parents=True)
    (mod / "dummy.ko").write_bytes(version.encode())


def root_tree(root: Path, *, usr: bool = True, etc: bool = True, ibi: bool = True,
              kernel: bool = True, big: int = 0) -> Path:
    """A small root file system as another build tool makes it."""
    root.mkdir(parents=True)
    if etc:
        (root / "etc").mkdir()
        (root / "etc/hostname").write_text("imported-host\n")
        (root / "etc/os-release").write_text("ID=debian\nVERSION_ID=13\n")
    if usr:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/tool").write_text("#!/bin/sh\necho imported\n")
        if ibi:
            (root / "usr/bin/ibi").write_text("#!/usr/bin/python3\n")
            os.chmod(root / "usr/bin/ibi", 0o755)
    else:
        (root / "opt").mkdir()
    if kernel:
        add_kernel(root, KV)
    if big:
        (root / "var").mkdir(exist_ok=True)
        (root / "var/big").write_bytes(os.urandom(big))
    return root


def squashed(tree: Path, dest: Path) -> Path:
    squash.mksquashfs(tree, dest)
    return dest


def sha256sum(path: Path) -> str:
    out = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return out.split()[0]


def same_store(before: dict[str, str], after: dict[str, str]) -> bool:
    """Fingerprints of one store, but for boot/kernels/ made empty (where an image's
    kernels are kept: part of every store's layout)."""
    made = {p for p in ("boot", "boot/kernels") if p not in before and after.get(p) == "dir"}
    return {p: v for p, v in after.items() if p not in made} == before


def fingerprint(data: Path) -> dict[str, str]:
    """Every path under the data directory with its content's digest (the store's lock
    file aside: its holder line changes with every command)."""
    out = {}
    for p in sorted(data.rglob("*")):
        rel = str(p.relative_to(data))
        if rel == ".root_images/.lock":
            continue
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "base-tree"
    build_base(tree)
    engine.init(source_dir=tree, description="the base")
    return engine


@pytest.fixture
def image(root_ns: Path) -> Path:
    """trixie.sqfs: a complete root image with a kernel and ibi in it."""
    return squashed(root_tree(root_ns / "trixie-tree"), root_ns / "in" / "trixie.sqfs")


@pytest.fixture(autouse=True)
def _images_dir(root_ns: Path) -> None:
    (root_ns / "in").mkdir()


class Ibi:
    """ibi's command line, in this process (so stdin and the engine can be arranged)."""

    def __init__(self, eng: Engine, capsys: pytest.CaptureFixture[str]) -> None:
        self.eng, self.capsys = eng, capsys
        self.out = self.err = ""

    def __call__(self, *args: str) -> int:
        rc = cli.main([*args, "--data", str(self.eng.data_dir),
                       "--run-dir", str(self.eng.run_dir)])
        self.out, self.err = self.capsys.readouterr()
        return rc

    def one_line_error(self) -> str:
        assert "Traceback" not in self.err, self.err
        lines = [ln for ln in self.err.splitlines() if not ln.startswith("ibi: hint:")]
        assert len(lines) == 1 and lines[0].startswith("ibi: error: "), self.err
        return lines[0]


@pytest.fixture
def ibi(store: Engine, capsys: pytest.CaptureFixture[str]) -> Ibi:
    return Ibi(store, capsys)


def assert_imported(eng: Engine, name: str, source: Path | None = None) -> None:
    """``name`` is in the store as a full image, checked, with its kernel, and the boot
    plan offers it; roottab still says base."""
    st = eng.store
    meta = st.read_meta(name)
    assert meta.kind is Kind.FULL and meta.stack == () and meta.parent is None
    assert meta.sha256 == sha256sum(st.image_path(name))
    assert meta.size == st.image_path(name).stat().st_size
    if source is not None:
        assert meta.sha256 == sha256sum(source)
    assert meta.compressor == "zstd"
    assert [k.version for k in meta.kernels] == [KV]
    kdir = st.kernel_dir(meta.kernels[0].id)
    assert kernelstore.file_sha256(kdir / "vmlinuz") == meta.kernels[0].vmlinuz_sha256
    assert eng.roottab() == ["base"]
    plan = (st.root / "bootplan").read_text()
    assert f"\nreview {name} {name}\n" in plan and f"\nmenu {name}\n" in plan
    assert f"\nimage {name} {meta.size} {meta.sha256}\n" in plan
    assert "\nnormal base\n" in plan
    assert st.stray_tmp() == [] and st.stray_kernel_tmp() == []
