"""The Debian package: scripts/build-deb builds ibi_<version>_all.deb once per session (in a
temporary directory), then dpkg-deb and lintian check what it installs, where, with which
modes, and what it depends on. Installing it is left to the VM tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.package

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DEPENDS = {"python3-urwid", "python3-psutil", "python3-yaml", "python3-pyudev",
           "squashfs-tools", "dracut", "util-linux", "e2fsprogs", "mount", "libcrypt1"}
# What a build in the work tree would leave behind; build-deb builds in a copy instead.
ARTEFACTS = ["debian/ibi", "debian/.debhelper", "debian/files", "debian/debhelper-build-stamp",
             "debian/ibi.substvars", "debian/ibi.debhelper.log", "debian/ibi.8", ".pybuild"]
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# ibi called by an absolute path other than /usr/bin/ibi (ibi-assemble is another program)
WRONG_IBI = re.compile(r"(?<![\w/])(?:/usr/local/s?bin|/usr/sbin|/sbin|/bin)/ibi(?![-\w])")


def _unavailable(reason: str) -> None:
    """Skip with a printed reason, or fail under IBI_REQUIRE_ALL=1 (CI)."""
    print(f"\ntest_package: {reason}")
    if os.environ.get("IBI_REQUIRE_ALL") == "1":
        pytest.fail(f"required capability missing: {reason}")
    pytest.skip(reason)


def _require_tool(cmd: str, package: str) -> None:
    """As root the missing Debian package is installed (like scripts/setup does)."""
    if shutil.which(cmd, path=SYSTEM_PATH):
        return
    if os.geteuid() == 0 and shutil.which("apt-get", path=SYSTEM_PATH):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", package], env=env,
                       capture_output=True)
        if shutil.which(cmd, path=SYSTEM_PATH):
            return
    _unavailable(f"{cmd} missing (apt-get install {package}; as root it is installed)")


def _mode(perms: str) -> int:
    """'-rwxr-xr-x' -> 0o755 (no setuid/sticky bits are expected in this package)."""
    assert len(perms) == 10 and not set(perms[1:]) - set("rwx-"), perms
    return sum(1 << (8 - i) for i, c in enumerate(perms[1:]) if c != "-")


@dataclass(frozen=True)
class Deb:
    path: Path
    files: dict[str, int]        # '/usr/bin/ibi' -> 0o755, regular files only
    entries: dict[str, str]      # every path -> its type letter from dpkg-deb -c
    tree: Path                   # dpkg-deb -x of the package

    def field(self, name: str) -> str:
        out = subprocess.run(["dpkg-deb", "-f", str(self.path), name], check=True,
                             capture_output=True, text=True).stdout
        return " ".join(out.split())

    def control_file(self, name: str) -> str:
        proc = subprocess.run(["dpkg-deb", "-I", str(self.path), name],
                              capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Deb:
    _require_tool("dpkg-buildpackage", "dpkg-dev")
    _require_tool("git", "git")
    if os.geteuid() != 0:
        check = subprocess.run(["dpkg-checkbuilddeps"], cwd=ROOT, capture_output=True,
                               text=True)
        if check.returncode:
            _unavailable(f"build dependencies missing (build-deb installs them as root): "
                         f"{check.stderr.strip()}")
    before = {a for a in ARTEFACTS if (ROOT / a).exists()}
    parent_before = set(ROOT.parent.glob("ibi_*"))

    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run([str(ROOT / "scripts/build-deb"), str(out)], capture_output=True,
                          text=True)
    if proc.returncode:
        pytest.fail(f"scripts/build-deb failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    path = Path(proc.stdout.splitlines()[-1])

    left = {a for a in ARTEFACTS if (ROOT / a).exists()} - before
    left |= {str(p) for p in set(ROOT.parent.glob("ibi_*")) - parent_before}
    assert not left, f"build-deb left build artefacts behind: {sorted(left)}"

    listing = subprocess.run(["dpkg-deb", "-c", str(path)], check=True, capture_output=True,
                             text=True).stdout
    files: dict[str, int] = {}
    entries: dict[str, str] = {}
    for line in listing.splitlines():
        perms, _owner, _size, _date, _time, name = line.split(maxsplit=5)
        name = name.split(" -> ")[0].removeprefix(".").rstrip("/") or "/"
        entries[name] = perms[0]
        if perms[0] == "-":
            files[name] = _mode(perms)
    tree = tmp_path_factory.mktemp("tree")
    subprocess.run(["dpkg-deb", "-x", str(path), str(tree)], check=True)
    return Deb(path, files, entries, tree)


def expected_files() -> dict[str, int]:
    """Every file the brief lists, from the source tree (new files are picked up too)."""
    want = {"/usr/bin/ibi": 0o755,
            "/usr/bin/ibi-menu": 0o755,
            "/usr/share/man/man8/ibi-menu.8.gz": 0o644,
            "/usr/lib/dracut/dracut.conf.d/90-ibi.conf": 0o644,
            "/etc/kernel/postinst.d/zz-ibi": 0o755,
            "/etc/kernel/postrm.d/zz-ibi": 0o755,
            "/usr/share/man/man8/ibi.8.gz": 0o644,
            "/usr/share/doc/ibi/copyright": 0o644}
    for f in (ROOT / "dracut-module/90ibi").iterdir():
        want[f"/usr/lib/dracut/modules.d/90ibi/{f.name}"] = 0o755 if f.suffix == ".sh" else 0o644
    for f in [*(ROOT / "systemd").glob("*.service"), *(ROOT / "systemd").glob("*.target")]:
        want[f"/usr/lib/systemd/system/{f.name}"] = 0o644
    for f in (ROOT / "systemd").glob("ibi-*.sh"):
        want[f"/usr/lib/ibi/{f.stem}"] = 0o755
    for pkg in ("maintenance", "screens"):
        for f in (ROOT / pkg).glob("*.py"):
            want[f"/usr/lib/python3/dist-packages/{pkg}/{f.name}"] = 0o644
    return want


def test_file_name_and_version(deb: Deb) -> None:
    assert deb.path.name == f"ibi_{VERSION}_all.deb"
    assert deb.field("Package") == "ibi"
    assert deb.field("Version") == VERSION
    assert deb.field("Architecture") == "all"
    assert deb.field("Section") == "admin"
    assert deb.field("Priority") == "optional"


def test_installed_files_and_modes(deb: Deb) -> None:
    want = expected_files()
    missing = sorted(set(want) - set(deb.files))
    assert not missing, f"not in the package: {missing}"
    wrong = {p: f"{deb.files[p]:o} (want {m:o})" for p, m in want.items() if deb.files[p] != m}
    assert not wrong, f"wrong modes: {wrong}"


def test_docs(deb: Deb) -> None:
    for doc in ["README.md", *(f.name for f in (ROOT / "docs").glob("*.md"))]:
        assert {f"/usr/share/doc/ibi/{doc}", f"/usr/share/doc/ibi/{doc}.gz"} & set(deb.files), doc


def test_nothing_unexpected(deb: Deb) -> None:
    assert not [p for p in deb.entries if "42_ibi" in p]
    # units only in /usr/lib/systemd/system (moved there from debhelper's lib/systemd/system)
    assert not [p for p in deb.entries if p.startswith("/lib")]
    assert not [p for p in deb.entries if p.endswith(".pyc") or "__pycache__" in p]
    assert not [p for p in deb.entries if "/tests/" in p or p.endswith("/.gitignore")]
    top = {p.split("/")[1] for p in deb.entries if p != "/"}
    assert top == {"etc", "usr"}


def test_console_script_runs_engine(deb: Deb) -> None:
    script = (deb.tree / "usr/bin/ibi").read_text()
    assert script.startswith("#!/usr/bin/python3")
    assert "from maintenance.cli import main" in script


def test_man_page(deb: Deb) -> None:
    text = subprocess.run(["zcat", str(deb.tree / "usr/share/man/man8/ibi.8.gz")], check=True,
                          capture_output=True, text=True).stdout
    assert '.TH IBI "8"' in text
    assert "Traceback" not in text
    assert "restore" in text.lower()


def _names(field: str) -> set[str]:
    """'a (>= 1), b | c, d:any' -> {'a', 'b', 'c', 'd'}"""
    return {re.split(r"[\s(:]", alt.strip())[0]
            for rel in field.split(",") for alt in rel.split("|") if alt.strip()}


def test_depends(deb: Deb) -> None:
    depends = _names(deb.field("Depends"))
    assert depends >= DEPENDS, f"missing: {sorted(DEPENDS - depends)}"
    assert "python3" in depends
    assert _names(deb.field("Recommends")) >= {"grub-pc", "grub-efi-amd64"}


def test_systemd_enable_no_start(deb: Deb) -> None:
    postinst = deb.control_file("postinst")
    enabled = set(re.findall(r"deb-systemd-helper enable '([^']+)'", postinst))
    # exactly the units with an [Install] section: the boot-time protection check and the
    # capture of the configuration after a successful boot; never the maintenance units
    assert enabled == {"ibi-protect.service", "ibi-state-save.service",
                       "ibi-ram-watch.service", "ibi-health.service",
                       "ibi-boot-ok.service", "ibi-reclaim.service"}, enabled
    assert "ibi-maintenance" not in postinst
    # not started at install, and nothing stopped or restarted by an upgrade or a removal
    for script in ("preinst", "postinst", "prerm", "postrm"):
        text = deb.control_file(script)
        assert not re.search(r"deb-systemd-invoke\s+(start|restart|try-restart|stop)", text), (
            script)


def test_conffiles(deb: Deb) -> None:
    conffiles = deb.control_file("conffiles").split()
    assert {"/etc/kernel/postinst.d/zz-ibi", "/etc/kernel/postrm.d/zz-ibi"} <= set(conffiles)


def test_packaged_scripts_call_ibi_where_it_is_installed(deb: Deb) -> None:
    """The package puts the console script at /usr/bin/ibi: no packaged script or unit may
    call it by another absolute path (ibi-assemble in the initramfs is another program)."""
    wrong = []
    for name, kind in deb.entries.items():
        if kind != "-" or not name.startswith(("/usr/lib/ibi/", "/usr/lib/dracut/",
                                               "/usr/lib/systemd/", "/etc/")):
            continue
        text = (deb.tree / name.lstrip("/")).read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if WRONG_IBI.search(line):
                wrong.append(f"{name}:{n}: {line.strip()}")
    assert not wrong, "calls ibi where the package does not install it:\n" + "\n".join(wrong)


def test_lintian_no_errors(deb: Deb) -> None:
    _require_tool("lintian", "lintian")
    proc = subprocess.run(["lintian", "--fail-on", "error", str(deb.path)],
                          capture_output=True, text=True,
                          env={**os.environ, "PATH": SYSTEM_PATH})
    assert proc.returncode == 0, proc.stdout + proc.stderr
