"""State operators: the parsers and renderers (plain trees), the declarations' errors, and
the operators an owner plugs in. Restore System / Roll back rendering the captured config on
real stores and mounts is in tests/test_state_stores.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from maintenance import operators as ops
from maintenance import state as statemod
from maintenance.errors import StoreError

# ---------------------------------------------------------------------- operators


def etc(tree: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tree


def zoneinfo(tree: Path, *zones: str) -> None:
    for z in zones:
        p = tree / "usr/share/zoneinfo" / z
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"TZif2" + z.encode())


def test_hostname_reads_and_renders_with_the_hosts_line(tmp_path: Path) -> None:
    a = etc(tmp_path / "a", {"etc/hostname": "office-pc\n",
                             "etc/hosts": "127.0.0.1 localhost\n127.0.1.1 office-pc.example.org "
                                          "office-pc\n::1 ip6-localhost\n"})
    h = ops.Hostname()
    vals = h.read(a)
    assert vals == {"name": "office-pc", "fqdn": "office-pc.example.org"}
    b = etc(tmp_path / "b", {"etc/hostname": "debian\n",
                             "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tdebian\n# mine\n"})
    assert h.write(b, vals) == ["/etc/hostname", "/etc/hosts"]
    assert (b / "etc/hostname").read_text() == "office-pc\n"
    assert (b / "etc/hosts").read_text() == (
        "127.0.0.1\tlocalhost\n127.0.1.1\toffice-pc.example.org office-pc\n# mine\n")
    c = etc(tmp_path / "c", {"etc/hostname": "x\n", "etc/hosts": "127.0.0.1 localhost\n"})
    h.write(c, {"name": "lab"})  # no 127.0.1.1 line: one is added after localhost
    assert (c / "etc/hosts").read_text() == "127.0.0.1 localhost\n127.0.1.1\tlab\n"


@pytest.mark.parametrize(("content", "problem"), [
    (None, "deleted"), ("", "empty"), ("\n  \n", "empty"),
    ("bad_name!\n", "unparsable: hostname.name 'bad_name!'"),
    ("-dash\n", "unparsable"),
])
def test_hostname_never_reads_a_broken_file(tmp_path: Path, content: str | None,
                                            problem: str) -> None:
    (tmp_path / "etc").mkdir()
    if content is not None:
        (tmp_path / "etc/hostname").write_text(content)
    with pytest.raises(ops.Invalid) as e:
        ops.Hostname().read(tmp_path)
    assert str(e.value).startswith(problem)


def test_timezone_follows_the_layout_of_the_system_it_is_written_into(tmp_path: Path) -> None:
    old = tmp_path / "old"
    etc(old, {"etc/timezone": "Europe/Berlin\n"})
    zoneinfo(old, "Europe/Berlin", "Etc/UTC")
    os.symlink("/usr/share/zoneinfo/Europe/Berlin", old / "etc/localtime")
    tz = ops.Timezone()
    assert tz.read(old) == {"zone": "Europe/Berlin"}
    new = tmp_path / "new"  # a newer base: no /etc/timezone any more
    zoneinfo(new, "Europe/Berlin", "Etc/UTC")
    (new / "etc").mkdir()
    os.symlink("/usr/share/zoneinfo/Etc/UTC", new / "etc/localtime")
    assert tz.write(new, {"zone": "Europe/Berlin"}) == ["/etc/localtime"]
    assert os.readlink(new / "etc/localtime") == "/usr/share/zoneinfo/Europe/Berlin"
    assert not (new / "etc/timezone").exists()
    with pytest.raises(ops.Invalid, match="not in this system"):
        tz.write(new, {"zone": "Mars/Olympus"})
    # a broken link with /etc/timezone still naming a zone: the zone is read from it
    os.unlink(old / "etc/localtime")
    os.symlink("/nowhere", old / "etc/localtime")
    assert tz.read(old) == {"zone": "Europe/Berlin"}
    os.unlink(old / "etc/timezone")
    with pytest.raises(ops.Invalid, match="points to /nowhere"):
        tz.read(old)


def test_machine_id_and_locale(tmp_path: Path) -> None:
    t = etc(tmp_path / "t", {"etc/machine-id": "uninitialized\n",
                             "etc/default/locale": "# made by hand\nLANG=\"de_DE.UTF-8\"\n"
                                                   "LC_TIME=en_GB.UTF-8\n"})
    with pytest.raises(ops.Invalid, match="unparsable"):
        ops.MachineId().read(t)
    assert ops.Locale().read(t) == {"LANG": "de_DE.UTF-8", "LC_TIME": "en_GB.UTF-8"}
    # a system whose locale lives in /etc/locale.conf, /etc/default/locale linking to it
    n = etc(tmp_path / "n", {"etc/locale.conf": "LANG=C.UTF-8\n"})
    (n / "etc/default").mkdir()
    os.symlink("../locale.conf", n / "etc/default/locale")
    assert ops.Locale().write(n, {"LANG": "de_DE.UTF-8"}) == ["/etc/locale.conf"]
    assert (n / "etc/locale.conf").read_text() == "LANG=de_DE.UTF-8\n"
    assert (n / "etc/default/locale").is_symlink()
    ops.MachineId().write(n, {"id": "0123456789abcdef0123456789abcdef"})  # a new file
    assert oct((n / "etc/machine-id").stat().st_mode & 0o777) == "0o444"
    with pytest.raises(ops.Invalid, match="LANG"):
        etc(t, {"etc/default/locale": "LANG=de_DE.UTF-8; rm -rf /\n"})
        ops.Locale().read(t)


def test_writes_never_go_through_a_symlink_out_of_the_tree(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = tmp_path / "tree"
    tree.mkdir()
    os.symlink(str(outside), tree / "etc")  # /etc -> a directory out of the tree
    with pytest.raises(ops.Invalid, match="is a symlink"):
        ops.Hostname().write(tree, {"name": "x"})
    assert list(outside.iterdir()) == []
    # reads resolve links inside the tree: an absolute target is the tree's, not the host's
    t2 = etc(tmp_path / "t2", {"srv/hostname": "inside\n"})
    (t2 / "etc").mkdir()
    os.symlink("/srv/hostname", t2 / "etc/hostname")
    assert ops.Hostname().read(t2) == {"name": "inside"}


# ---------------------------------------------------------------------- declarations

def test_the_default_declarations_parse() -> None:
    cfg = statemod.parse_config(statemod.DEFAULT_CONFIG)
    assert [op.name for op in cfg.registry] == ["hostname", "timezone", "machine-id", "locale"]
    assert "/etc/ssh/ssh_host_*" in cfg.stash and cfg.keep == 5


@pytest.mark.parametrize(("text", "message"), [
    ("registry: [hostname\n", "state.yaml line 2: not valid YAML"),
    ("format: 1\nmagic:\n  - /etc/x\n", "line 2: unknown operator 'magic'"),
    ("registry:\n  - hostname\n  - hostnam\n", "line 3: unknown registry operator 'hostnam'"),
    ("stash:\n  - /etc/ssh\n  - /etc/ssh/ssh_host_*\n",
     "line 3: /etc/ssh/ssh_host_* (stash) overlaps /etc/ssh (stash, line 2)"),
    ("registry: [hostname]\nstash:\n  - /etc/hosts\n",
     "line 3: /etc/hosts (stash) overlaps /etc/hosts (registry hostname, line 1)"),
    ("stash:\n  - /etc/x\nreference:\n  - /etc/x\n", "line 4: /etc/x (reference) overlaps"),
    ("stash:\n  - etc/relative\n", "line 2: 'etc/relative' is not a path under /"),
    ("stash:\n  - /etc/../root/.ssh\n", "line 2: '/etc/../root/.ssh' is not a path under /"),
    ("reference:\n  - /home/alice\n", "line 2: '/home/alice' is not part of the system"),
    ("stash:\n  - /etc/*/keys\n", "wildcards only in the last part"),
    ("keep: 0\n", "line 1: keep must be"),
    ("stash: /etc/x\n", "line 1: stash must be a list"),
])
def test_bad_declarations_are_one_line_errors_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(StoreError) as e:
        statemod.parse_config(text)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_reference_path_may_carve_a_file_out_of_a_stash_directory() -> None:
    cfg = statemod.parse_config("stash:\n  - /etc/nm\nreference:\n  - /etc/nm/managed.conf\n")
    assert cfg.is_reference("/etc/nm/managed.conf") and not cfg.is_reference("/etc/nm/a")


class Motd(ops.RegistryOperator):
    """An owner's operator: the first line of /etc/motd as a value."""

    name = "motd"
    paths = ("/etc/motd",)
    fields = {"greeting": "one line"}  # noqa: RUF012
    required = ("greeting",)

    def read(self, tree: Path) -> ops.Values:
        text = ops.read_text(tree, "/etc/motd")
        if not text or not text.strip():
            raise ops.Invalid("deleted" if text is None else "empty")
        return {"greeting": text.splitlines()[0]}

    def write(self, tree: Path, values: dict[str, str]) -> list[str]:  # type: ignore[override]
        ops.write_file(tree, "/etc/motd", values["greeting"] + "\n")
        return ["/etc/motd"]

    def show(self, values: dict[str, str]) -> dict[str, str]:  # type: ignore[override]
        return {"/etc/motd": values["greeting"]}


def test_an_owner_operator_plugs_in(tmp_path: Path) -> None:
    cfg = statemod.parse_config("registry:\n  - motd\n", ops={"motd": Motd})
    src = etc(tmp_path / "src", {"etc/motd": "welcome home\n"})
    dst = etc(tmp_path / "dst", {"etc/motd": "stock\n"})
    assert cfg.registry[0].read(src) == {"greeting": "welcome home"}
    cfg.registry[0].write(dst, {"greeting": "welcome home"})
    assert (dst / "etc/motd").read_text() == "welcome home\n"


# ---------------------------------------------------------------------- from the review

def test_values_equal_to_the_files_leave_them_as_they_are(tmp_path: Path) -> None:
    """A Debian system's own files (d-i's hosts line with an alias and a comment,
    timedatectl's relative link, update-locale's header and quotes) are not rewritten
    when they hold the values already; a new name keeps the aliases and the comment."""
    t = etc(tmp_path, {"etc/hostname": "office-pc\n",
                       "etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\toffice-pc.lan\toffice-pc "
                                    "printer # mine\n",
                       "etc/default/locale": "#  File generated by update-locale\n"
                                             "LANG=\"en_US.UTF-8\"\n"})
    zoneinfo(t, "Europe/Berlin", "Etc/UTC")
    os.symlink("../usr/share/zoneinfo/Europe/Berlin", t / "etc/localtime")
    before = {p: (t / p).read_text() for p in ("etc/hosts", "etc/default/locale")}
    for op in (ops.Hostname(), ops.Timezone(), ops.Locale()):
        assert op.write(t, op.read(t)) == [], op.name
    assert {p: (t / p).read_text() for p in before} == before
    assert ops.Hostname().write(t, {"name": "lab-7", "fqdn": "lab-7.lan"}) == [
        "/etc/hostname", "/etc/hosts"]
    assert (t / "etc/hosts").read_text().splitlines()[1] == \
        "127.0.1.1\tlab-7.lan lab-7 printer # mine"
    assert ops.Timezone().write(t, {"zone": "Etc/UTC"}) == ["/etc/localtime"]
    assert os.readlink(t / "etc/localtime") == "../usr/share/zoneinfo/Etc/UTC"


def test_hostname_syntax(tmp_path: Path) -> None:
    h = ops.Hostname()
    h.check({"name": "node1.cluster"})  # hostname(5): a dotted static name is valid
    for bad in ("x\n", "-x", "a" * 65, "under_score"):
        with pytest.raises(ops.Invalid):
            h.check({"name": bad})


class _EntryPoint:
    def __init__(self, name: str, obj: object) -> None:
        self.name, self.value, self.obj = name, f"owner_pkg:{name}", obj

    def load(self) -> object:
        if isinstance(self.obj, Exception):
            raise self.obj
        return self.obj


def test_operators_from_installed_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner's package names its operator in the entry point group
    ibi.state_operators; state.yaml then lists it like a built-in one."""
    eps = [_EntryPoint("motd", Motd)]
    listed: list[str] = []
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group: listed.append(group) or eps)
    cfg = statemod.parse_config("registry:\n  - hostname\n  - motd\n")
    assert [op.name for op in cfg.registry] == ["hostname", "motd"]
    statemod.parse_config("registry: [motd]\n")
    assert listed == ["ibi.state_operators"]  # listed once per process (it is slow)
    broken = [_EntryPoint("broken", ImportError("No module named 'owner_pkg'"))]
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: broken)  # listed anew
    with pytest.raises(StoreError, match=r"state operator 'broken' .* cannot be loaded"):
        statemod.parse_config("registry: [hostname]\n")
