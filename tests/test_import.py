"""ibi import on real stores and real mounts: an image from a file, standard input and an
http URL lands as a full image with its kernels and nothing else changes; every bad input
is one line on stderr and leaves the store exactly as it was; a crash at each step leaves
the old store or the new one after recovery."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maintenance import cli, imports, importsrc, kernels, kernelstore, records, squash
from maintenance import create as create_mod
from maintenance import store as store_mod
from maintenance.engine import Engine
from maintenance.errors import NoSpace
from maintenance.model import Kind
from maintenance.run import run
from tests.fstree import build_base
from tests.test_crash import CRASH, after_nth

pytestmark = pytest.mark.root

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


# --------------------------------------------------------------------------- good imports

def test_import_a_file_changes_nothing_else(ibi: Ibi, image: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    st = ibi.eng.store
    before = fingerprint(ibi.eng.data_dir)
    caplog.set_level(logging.WARNING)
    assert ibi("import", "--image", str(image), "-m", "Debian 13 from mkosi") == 0, ibi.err
    digest = sha256sum(image)
    assert re.fullmatch(rf"imported trixie \(\d+\.\d KiB, sha256 {digest}\): ibi switch "
                        r"trixie makes it the active stack\n", ibi.out), ibi.out
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert_imported(ibi.eng, "trixie", image)
    assert st.read_meta("trixie").description == "Debian 13 from mkosi"
    assert st.read_meta("trixie").source_layer == imports.IMPORTED
    after = fingerprint(ibi.eng.data_dir)
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    kid = st.read_meta("trixie").kernels[0].id
    assert changed == {".root_images/trixie.sqfs", ".root_images/trixie.yaml",
                       ".root_images/bootplan", "boot", "boot/kernels", f"boot/kernels/{kid}",
                       *(f"boot/kernels/{kid}/{f}"
                         for f in ("vmlinuz", "initrd.img", "kernel.yaml"))}
    assert ibi("verify", "--all") == 0, ibi.out + ibi.err
    assert "ok   trixie" in ibi.out and f"ok   kernel {kid}" in ibi.out
    # the Live Review of it boots its own kernel
    assert kernels.entry_kernels(st, ["base"], None, [("trixie", ("trixie",))])[
        "review:trixie"].id == kid  # type: ignore[union-attr]


def test_import_from_stdin_with_json(ibi: Ibi, image: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    line = subprocess.run(["sha256sum", str(image)], capture_output=True, text=True,
                          check=True).stdout  # "HEX  FILE": the file name is ignored
    with open(image, "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        assert ibi("import", "--image", "-", "--json", "--sha256", line) == 0, ibi.err
    doc = json.loads(ibi.out)
    name = doc["name"]
    assert re.fullmatch(r"\d{8}-\d{6}-import", name)
    assert doc["kind"] == "full" and doc["sha256"] == sha256sum(image)
    assert doc["description"] == "imported from standard input"
    assert_imported(ibi.eng, name, image)
    # a second one in the same second gets a name of its own
    with open(image, "rb") as f:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
        meta = ibi.eng.import_image("-")
    assert meta.name != name and meta.name.startswith(name[:8])


class Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/short/"):  # says the whole size, sends half, hangs up
            data = (Path(self.directory) / self.path.removeprefix("/short/")).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_dir(root_ns: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy",
                "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = root_ns / "served"
    served.mkdir()

    def handler(*a, **kw):  # type: ignore[no-untyped-def]
        return Handler(*a, directory=str(served), **kw)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()


def test_import_from_an_http_url(ibi: Ibi, image: Path, http_dir: tuple[str, Path]) -> None:
    url, served = http_dir
    shutil.copy(image, served / "web.sqfs")
    before = fingerprint(ibi.eng.data_dir)
    assert ibi("import", "-q", "--image", f"{url}/nope.sqfs") == 1
    assert "cannot download" in ibi.one_line_error() and "404" in ibi.err
    assert ibi("import", "-q", "--image", f"{url}/short/web.sqfs") == 1
    assert "truncated" in ibi.one_line_error()
    assert fingerprint(ibi.eng.data_dir) == before
    digest = sha256sum(image)
    assert ibi("import", "--image", f"{url}/web.sqfs?token=secret", "--sha256",
               digest.upper(), "--name", "web") == 0, ibi.err
    assert_imported(ibi.eng, "web", image)
    desc = ibi.eng.store.read_meta("web").description
    assert desc == f"imported from {url}/web.sqfs"  # no query: it may hold a secret


def test_import_another_ibi_machines_point(ibi: Ibi, root_ns: Path) -> None:
    """A full restore point copied from another ibi machine with its NAME.yaml: checked
    against it; its name is taken here (base), so it gets a timestamp."""
    other = Engine(root_ns / "other", root_ns / "run")
    other.data_dir.mkdir()
    other.init(source_dir=root_tree(root_ns / "other-tree"), description="the office PC")
    src = root_ns / "in"
    for ext in (".sqfs", ".yaml"):
        shutil.copy(other.store.root / f"base{ext}", src / f"base{ext}")
    assert ibi("import", "--image", str(src / "base.sqfs"), "--json") == 0, ibi.err
    doc = json.loads(ibi.out)
    assert re.fullmatch(r"\d{8}-\d{6}-import", doc["name"])
    assert doc["description"] == f"imported from {src / 'base.sqfs'}: the office PC"
    assert_imported(ibi.eng, doc["name"], other.store.image_path("base"))


def test_an_image_without_ibi_or_kernel_is_imported_with_warnings(
        ibi: Ibi, root_ns: Path, caplog: pytest.LogCaptureFixture) -> None:
    img = root_ns / "in" / "bare.sqfs"  # mmdebstrap | mksquashfs, gzip
    squash.mksquashfs(root_tree(root_ns / "bare", ibi=False, kernel=False), img,
                      compressor="gzip")
    caplog.set_level(logging.WARNING)
    kept = ibi.eng.store.kernel_ids()
    assert ibi("import", "--image", str(img)) == 0, ibi.err
    warnings = " | ".join(r.getMessage() for r in caplog.records
                          if r.levelno == logging.WARNING)
    assert "bare has no /usr/bin/ibi" in warnings
    assert "bare has no kernel that ibi can boot" in warnings
    assert ibi.eng.store.read_meta("bare").kernels == ()
    assert ibi.eng.store.read_meta("bare").compressor == "gzip"
    assert ibi.eng.store.kernel_ids() == kept
    assert "\nreview bare bare\n" in (ibi.eng.store.root / "bootplan").read_text()


def test_help_says_what_is_checked_and_what_comes_next(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["import", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for words in ("--image SRC", "--sha256 HEX", "-m DESCRIPTION", "/usr and /etc",
                  "NAME.yaml", "Nothing\nelse changes", "ibi switch NAME then makes it",
                  "--image - --name nightly", "exit status:"):
        assert words in out, words


# --------------------------------------------------------------------------- refusals

def refused(ibi: Ibi, rc: int, match: str, *args: str) -> None:
    """The command fails with ``rc`` and one line matching ``match``, store unchanged."""
    before = fingerprint(ibi.eng.data_dir)
    assert ibi("import", "-q", *args) == rc, ibi.out + ibi.err
    line = ibi.one_line_error()
    assert re.search(match, line), line
    assert fingerprint(ibi.eng.data_dir) == before
    assert ibi.eng.store.stray_tmp() == [] and ibi.eng.store.stray_kernel_tmp() == []


def test_a_digest_mismatch_is_refused(ibi: Ibi, image: Path) -> None:
    refused(ibi, 1, r"has sha256 [0-9a-f]{64}, not the 0{64} expected \(--sha256\)",
            "--image", str(image), "--sha256", "0" * 64)
    refused(ibi, 2, "is not a SHA-256 digest", "--image", str(image), "--sha256", "abc")


def test_a_sibling_metadata_mismatch_is_refused(ibi: Ibi, root_ns: Path, image: Path) -> None:
    other = Engine(root_ns / "other", root_ns / "run")
    other.data_dir.mkdir()
    other.init(source_dir=root_tree(root_ns / "other-tree"))
    dest = root_ns / "copy"
    dest.mkdir()
    shutil.copy(other.store.root / "base.yaml", dest / "point.yaml")
    shutil.copy(image, dest / "point.sqfs")  # another image than its metadata describes
    refused(ibi, 1, r"point\.sqfs has (sha256|\d+ bytes).*its metadata \(point\.yaml\) says",
            "--image", str(dest / "point.sqfs"))
    shutil.copy(other.store.root / "base.sqfs", dest / "point.sqfs")
    meta = other.store.read_meta("base")
    text = (dest / "point.yaml").read_text().replace(meta.sha256, "f" * 64)
    (dest / "point.yaml").write_text(text)
    refused(ibi, 1, rf"has sha256 {meta.sha256}, not the f{{64}} its metadata",
            "--image", str(dest / "point.sqfs"))
    (dest / "point.yaml").write_text("format: 1\nname: [\n")
    refused(ibi, 1, r"point\.yaml: unreadable metadata .*cannot check the image against it",
            "--image", str(dest / "point.sqfs"))
    # an incremental restore point works only on its own stack
    (other.store.upper / "changed").write_text("x\n")
    other.create(Kind.INCREMENTAL, name="inc")
    refused(ibi, 2, r"inc\.sqfs is an incremental restore point: it works only on the "
            r"stack it was made on \(base\)", "--image", str(other.store.image_path("inc")))


def test_what_is_not_a_sound_squashfs_image_is_refused(ibi: Ibi, root_ns: Path,
                                                       image: Path) -> None:
    junk = root_ns / "in" / "junk.sqfs"
    junk.write_bytes(b"not a squashfs image\n" * 1000)
    refused(ibi, 1, r"junk\.sqfs: not a squashfs image \(no hsqs magic\)",
            "--image", str(junk))
    short = root_ns / "in" / "short.sqfs"
    data = image.read_bytes()
    short.write_bytes(data[: len(data) // 2])
    refused(ibi, 1, r"short\.sqfs: truncated: the superblock says \d+ bytes, the file has",
            "--image", str(short))
    empty = root_ns / "in" / "empty.sqfs"
    empty.touch()
    refused(ibi, 1, r"empty\.sqfs: shorter than a squashfs superblock", "--image", str(empty))
    refused(ibi, 1, r"image file .*nowhere\.sqfs does not exist",
            "--image", str(root_ns / "nowhere.sqfs"))
    refused(ibi, 2, r"is a directory, not a squashfs image", "--image", str(root_ns / "in"))
    refused(ibi, 2, r"cannot import from ftp:// URLs", "--image", "ftp://example.org/x.sqfs")


def test_a_truncated_stream_is_refused(ibi: Ibi, image: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    data = image.read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data[: len(data) - 4096])))
    refused(ibi, 1, r"standard input: truncated: the superblock says", "--image", "-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    refused(ibi, 1, r"standard input is empty", "--image", "-")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"PK\3\4" + data)))
    refused(ibi, 1, r"standard input: not a squashfs image", "--image", "-")


def test_a_tree_that_is_not_a_root_is_refused(ibi: Ibi, root_ns: Path) -> None:
    no_usr = squashed(root_tree(root_ns / "t1", usr=False, kernel=False),
                      root_ns / "in" / "no-usr.sqfs")
    refused(ibi, 1, r"no-usr\.sqfs is not a root file system: it has no /usr directory",
            "--image", str(no_usr))
    no_etc = squashed(root_tree(root_ns / "t2", etc=False), root_ns / "in" / "no-etc.sqfs")
    refused(ibi, 1, r"no-etc\.sqfs is not a root file system: it has no /etc directory",
            "--image", str(no_etc))
    assert not list((ibi.eng.run_dir / "stacks").glob("image-*"))  # unmounted, removed


def test_names_in_use_and_bad_names_are_refused(ibi: Ibi, image: Path) -> None:
    refused(ibi, 2, r"an image named 'base' already exists", "--image", str(image),
            "--name", "base")
    st = ibi.eng.store
    (st.root / "ghost.yaml").write_text(records.meta_to_yaml(st.read_meta("base"))
                                        .replace("name: base", "name: ghost"))
    refused(ibi, 2, r"an image named 'ghost' already exists", "--image", str(image),
            "--name", "ghost")
    # a name roottab.prev or another image's stack names stands in for that image
    st.roottab_prev_path.write_text("base\nlost\n")
    refused(ibi, 2, r"an image named 'lost' already exists \(or a stack names it\)",
            "--image", str(image), "--name", "lost")
    refused(ibi, 2, r"bad image name '\.\./evil'", "--image", str(image), "--name", "../evil")
    refused(ibi, 2, r"bad image name 'x\.sqfs'", "--image", str(image), "--name", "x.sqfs")


def test_a_stream_is_stopped_before_the_disk_is_full(engine: Engine, root_ns: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    big = squashed(root_tree(root_ns / "big", big=40 << 20), root_ns / "in" / "big.sqfs")
    run(["mount", "-t", "tmpfs", "-o", "size=48m", "tiny", str(engine.data_dir)])
    try:
        tree = root_ns / "base-tree"
        build_base(tree)
        (tree / "var/lib/sparse").unlink()
        engine.init(source_dir=tree)
        before = fingerprint(engine.data_dir)
        with pytest.raises(NoSpace, match=r"not enough space to import .*big\.sqfs: needs"):
            engine.import_image(str(big))
        with open(big, "rb") as f:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(f))
            with pytest.raises(NoSpace, match=r"not enough space to import standard input: "
                               r".* received, .* free on .*\(ibi keeps 16.0 MiB free\)"):
                engine.import_image("-")
        assert fingerprint(engine.data_dir) == before
        assert engine.store.stray_tmp() == []
    finally:
        run(["umount", str(engine.data_dir)])


# --------------------------------------------------------------------------- crashes

def test_an_exception_midway_leaves_the_store_unchanged(ibi: Ibi, image: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    before = fingerprint(ibi.eng.data_dir)
    real_write_meta = store_mod.Store.write_meta

    def write_then_fail(self: store_mod.Store, meta: object) -> None:
        real_write_meta(self, meta)  # type: ignore[arg-type]
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as mp:
        mp.setattr(store_mod.Store, "write_meta", write_then_fail)
        assert ibi("import", "-q", "--image", str(image)) == 1
    assert "Input/output error" in ibi.one_line_error()
    # its metadata and its kernel's copy are gone too
    assert same_store(before, fingerprint(ibi.eng.data_dir))

    calls = {"n": 0}
    real_room = importsrc._room

    def interrupt(*a: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real_room(*a)  # type: ignore[arg-type]

    big = squashed(root_tree(ibi.eng.run_dir.parent / "big", big=3 << 20),
                   ibi.eng.run_dir.parent / "in" / "big.sqfs")
    with monkeypatch.context() as mp:
        mp.setattr(importsrc, "_room", interrupt)
        assert ibi("import", "-q", "--image", str(big)) == 130
    assert calls["n"] == 2 and ibi.err == "ibi: interrupted\n"
    assert same_store(before, fingerprint(ibi.eng.data_dir))
    assert ibi("recover") == 0 and ibi.out == "nothing to recover\n"


def die_after(mp: pytest.MonkeyPatch, owner: object, name: str, n: int = 1,
              before: bool = False) -> None:
    """Die (like a power cut: no clean-up) at the n-th call of owner.name, before it runs
    or just after it returns (tests/test_crash.py's)."""
    after_nth(mp, owner, name, n, before)


CRASH_POINTS: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], bool]] = {
    # point: (arm it, whether the image is in after recovery)
    "mid-copy": (lambda mp: die_after(mp, importsrc, "_room", 3, before=True), False),
    "copied": (lambda mp: die_after(mp, imports, "_check_digest"), False),
    "mounted, checked": (lambda mp: die_after(mp, imports, "_check_tree"), False),
    "mid kernel copy": (lambda mp: die_after(mp, kernelstore, "_copy_hashed"), False),
    "kernel kept": (lambda mp: die_after(mp, kernels, "keep"), False),
    "metadata written": (lambda mp: die_after(mp, store_mod.Store, "write_meta"), False),
    "image renamed in": (lambda mp: die_after(mp, create_mod, "durable_rename"), True),
    "boot plan renewed": (lambda mp: die_after(mp, Engine, "_refresh_quietly", 2), True),
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_a_crash_leaves_the_old_store_or_the_new(store: Engine, root_ns: Path,
                                                 point: str) -> None:
    img = squashed(root_tree(root_ns / "tree", big=3 << 20), root_ns / "in" / "new.sqfs")
    before = fingerprint(store.data_dir)
    arm, imported = CRASH_POINTS[point]
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            mp = pytest.MonkeyPatch()
            arm(mp)
            Engine(store.data_dir, store.run_dir).import_image(str(img))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == CRASH
    fresh = Engine(store.data_dir, store.run_dir)
    assert cli.main(["recover", "--data", str(store.data_dir), "--run-dir",
                     str(store.run_dir), "-q"]) == 0
    assert not list((store.run_dir / "stacks").glob("image-*"))
    if imported:
        assert_imported(fresh, "new", img)
        assert fresh.verify(all_images=True).ok
    else:
        assert same_store(before, fingerprint(store.data_dir)), point
        # and the same import then goes through
        fresh.import_image(str(img))
        assert_imported(fresh, "new", img)
