"""Fast checks of the boot side that need no VM: the shell library of the dracut module run
under /bin/sh against a store in a temporary directory, shellcheck, and the agreement of
the overlay options with the engine."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "dracut-module/90ibi/ibi-lib.sh"
SHELL_FILES = sorted([*ROOT.glob("dracut-module/90ibi/*.sh"), *ROOT.glob("systemd/*.sh"),
                      *ROOT.glob("systemd/42_ibi")])

# what dracut-lib.sh provides, reduced to what ibi-lib.sh uses
STUBS = """
getarg() { return 1; }
ismounted() { return 1; }
label_uuid_to_dev() { echo "/dev/disk/by-label/${1#LABEL=}"; }
"""


def test_overlay_options_match_the_engine() -> None:
    from maintenance.mounts import OVERLAY_OPTIONS

    m = re.search(r'^IBI_OVERLAY_OPTIONS="([^"]*)"', LIB.read_text(), re.M)
    assert m, "ibi-lib.sh does not define IBI_OVERLAY_OPTIONS"
    assert m.group(1) == OVERLAY_OPTIONS


@pytest.mark.parametrize("path", SHELL_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_shellcheck_clean(path: Path) -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", "-s", "sh", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def lib(data: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in /bin/sh with ibi-lib.sh sourced and IBI_DATA pointing at ``data``."""
    text = f"{STUBS}\n. {LIB}\nIBI_DATA={data}\n{script}\n"
    return subprocess.run(["sh", "-c", text], capture_output=True, text=True)


def store(tmp_path: Path, images: dict[str, str], roottab: str) -> Path:
    s = tmp_path / ".root_images"
    s.mkdir()
    for name, yaml in images.items():
        (s / f"{name}.sqfs").write_bytes(b"hsqs")
        (s / f"{name}.yaml").write_text(yaml)
    (s / "roottab").write_text(roottab)
    return tmp_path


BASE = "format: 1\nname: base\nkind: base\nstack: []\n"
INC = "format: 1\nname: {n}\nkind: incremental\nparent: {p}\nstack:\n{s}\nsource_layer: x\n"


def read_roottab(data: Path, which: str = "roottab") -> tuple[int, str]:
    r = lib(data, f'ibi_read_roottab "$IBI_DATA/.root_images/{which}" && '
                  'echo "$IBI_NAMES" || { echo "ERR $IBI_ERROR"; exit 1; }')
    return r.returncode, r.stdout.strip()


def test_roottab_comments_and_blanks(tmp_path: Path) -> None:
    data = store(tmp_path, {"base": BASE, "inc1": INC.format(n="inc1", p="base", s="- base")},
                 "# a comment\n\n  base   # the bottom\n\tinc1\n")
    assert read_roottab(data) == (0, "base\ninc1")


@pytest.mark.parametrize(("text", "error"), [
    ("base\nmissing\n", "names image 'missing', which is missing"),
    ("base\nbase\n", "listed twice"),
    ("# only a comment\n\n", "names no image"),
    ("base\nbad name\n", "bad image name 'bad name'"),
    ("\x00\xff garbage\n", "bad image name"),
    ("../etc\n", "bad image name"),
])
def test_roottab_errors(tmp_path: Path, text: str, error: str) -> None:
    data = store(tmp_path, {"base": BASE}, text)
    rc, out = read_roottab(data)
    assert rc == 1 and error in out, out


def test_roottab_missing_file(tmp_path: Path) -> None:
    data = store(tmp_path, {"base": BASE}, "base\n")
    rc, out = read_roottab(data, "roottab.prev")
    assert rc == 1 and "roottab.prev is missing" in out


def review(data: Path, name: str) -> tuple[int, str]:
    r = lib(data, f'ibi_review_stack {name} && echo "$IBI_NAMES" || '
                  '{ echo "ERR $IBI_ERROR"; exit 1; }')
    return r.returncode, r.stdout.strip()


def test_review_stack(tmp_path: Path) -> None:
    images = {
        "base": BASE,
        "inc1": INC.format(n="inc1", p="base", s="- base"),
        "inc2": INC.format(n="inc2", p="inc1", s="- base\n- 'inc1'"),
        "old": INC.format(n="old", p="base", s="- base"),
        "full1": "format: 1\nname: full1\nkind: full\nstack:\n- base\n- inc1\n",
        "orphan": INC.format(n="orphan", p="gone", s="- gone"),
    }
    data = store(tmp_path, images, "base\ninc1\ninc2\n")
    assert review(data, "base") == (0, "base")
    assert review(data, "inc1") == (0, "base\ninc1")
    assert review(data, "inc2") == (0, "base\ninc1\ninc2")
    assert review(data, "old") == (0, "base\nold")  # outside roottab: from its metadata
    assert review(data, "full1") == (0, "full1")  # a full image stands alone
    rc, out = review(data, "orphan")
    assert rc == 1 and "needs image 'gone'" in out
    rc, out = review(data, "nope")
    assert rc == 1 and "no image named 'nope'" in out


def test_grub_snippet_lists_maintenance_and_reviews(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    for v in ("6.1.0-9-amd64", "6.12.7-amd64", "6.12.30-amd64"):
        (boot / f"vmlinuz-{v}").write_text("k")
    for v in ("6.1.0-9-amd64", "6.12.7-amd64"):  # 6.12.30 has no initramfs: skipped
        (boot / f"initrd.img-{v}").write_text("i")
    data = store(tmp_path, {
        "base": BASE + "created: '2026-01-01T10:00:00Z'\n",
        "inc1": INC.format(n="inc1", p="base", s="- base") + "created: '2026-02-01T10:00:00Z'\n",
    }, "base\ninc1\n")
    env = {"PATH": "/usr/bin:/bin", "IBI_BOOT_DIR": str(boot), "IBI_GRUB_LIB": "/nonexistent",
           "GRUB_CMDLINE_LINUX": "console=ttyS0"}
    script = ROOT / "systemd/42_ibi"
    r = subprocess.run(["sh", "-c", f'IBI_DATA_DIR={data}; . {script}'], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    titles = re.findall(r"menuentry '([^']*)'", out)
    assert titles == ["ibi: Maintenance Mode",
                      "ibi: Live Review of inc1 (incremental, 2026-02-01T10:00:00Z)",
                      "ibi: Live Review of base (base, 2026-01-01T10:00:00Z)"], out
    assert f"linux {boot}/vmlinuz-6.12.7-amd64 rd.ibi.data=LABEL=ibidata rd.ibi.maintenance" \
        " console=ttyS0" in out
    assert "rd.ibi.review=inc1" in out and f"initrd {boot}/initrd.img-6.12.7-amd64" in out
