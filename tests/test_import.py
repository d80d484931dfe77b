"""ibi import on real stores and real mounts: an image from a file, standard input and an
http URL lands as a full image with its kernels and nothing else changes; every bad input
is one line on stderr and leaves the store exactly as it was; a crash at each step leaves
the old store or the new one after recovery.

The good imports and the help are here; the refusals and the crashes are in
tests/test_import_refusals.py, the shared kit in tests/import_kit.py."""

from __future__ import annotations

import http.server
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from maintenance import cli, imports, kernels, squash
from maintenance.engine import Engine
from tests import import_kit
from tests.import_kit import Ibi, assert_imported, fingerprint, root_tree, sha256sum

pytestmark = pytest.mark.root

# the fixtures, by name: pytest finds them in this module
_images_dir = import_kit._images_dir
ibi = import_kit.ibi
image = import_kit.image
store = import_kit.store


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
