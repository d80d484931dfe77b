"""State operators on real stores and mounts: Restore System / Roll back rendering the captured
config, the captures (versioned, pruned, damaged, set by the owner), the stash's and the
reference paths' rules, the CLI twin and a queued restore. The operators on plain trees are
in tests/test_state_operators.py (etc and zoneinfo come from there)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from maintenance import state as statemod
from maintenance.engine import Engine
from maintenance.errors import StoreError, UsageError
from maintenance.model import Kind
from tests.fstree import build_base
from tests.test_cli import ibi, one_line_error
from tests.test_state_operators import etc, zoneinfo

# ---------------------------------------------------------------------- real stores

KEY = "etc/ssh/ssh_host_ed25519_key"


def base_tree(root: Path) -> Path:
    tree = root / "tree"
    build_base(tree)
    etc(tree, {"etc/hosts": "127.0.0.1\tlocalhost\n127.0.1.1\tbase-host\n",
               "etc/timezone": "Etc/UTC\n", KEY: "base-key\n",
               "etc/default/locale": "LANG=C.UTF-8\n",
               "etc/machine-id": "0123456789abcdef0123456789abcdef\n"})
    os.chmod(tree / KEY, 0o600)
    zoneinfo(tree, "Etc/UTC", "Europe/Berlin")
    os.symlink("/usr/share/zoneinfo/Etc/UTC", tree / "etc/localtime")
    return tree


@pytest.fixture
def state_store(engine: Engine, root_ns: Path) -> Engine:
    engine.init(source_dir=base_tree(root_ns))
    (root_ns / "mnt").mkdir()
    return engine


def edit(eng: Engine, root: Path, change) -> None:  # type: ignore[no-untyped-def]
    mnt = root / "mnt"
    eng.mount(mnt)
    try:
        change(mnt)
    finally:
        eng.umount(mnt)


def read(eng: Engine, root: Path, *paths: str) -> list[str | None]:
    out: list[str | None] = []
    edit(eng, root, lambda m: out.extend(
        (os.readlink(m / p) if (m / p).is_symlink() else (m / p).read_text())
        if os.path.lexists(m / p) else None for p in paths))
    return out


def configure(m: Path) -> None:
    """What an owner does on a good day: name the machine, pick a zone, new host key."""
    (m / "etc/hostname").write_text("office-pc\n")
    (m / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\toffice-pc\n")
    os.unlink(m / "etc/localtime")
    os.symlink("/usr/share/zoneinfo/Europe/Berlin", m / "etc/localtime")
    (m / "etc/timezone").write_text("Europe/Berlin\n")
    (m / KEY).write_text("key-v1\n")
    (m / "etc/unrelated.conf").write_text("a change nobody manages\n")


def break_it(m: Path) -> None:
    os.unlink(m / "etc/hostname")
    (m / KEY).write_text("key-v2 (an intruder's)\n")


def test_restore_renders_the_captured_config_not_the_damage(state_store: Engine,
                                                             root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)
    cap = eng.state_save()
    assert cap is not None and cap.reason == "save"
    assert {v.key: v.value for v in cap.values}["hostname.name"] == "office-pc"
    assert eng.state_save() is None  # nothing changed: no new version
    edit(eng, root_ns, break_it)
    plan = eng.state_plan()
    rows = {i.path: i for i in plan.items}
    host = rows["/etc/hostname"]
    assert (host.now, host.now_valid, host.written, host.can_keep) == (
        "(deleted)", False, "office-pc", False)
    assert host.source == f"capture {cap.id}"
    key = rows["/" + KEY]
    assert key.now_valid and key.can_keep and key.changed and "/" + KEY in plan.choices
    assert "hostname" not in plan.choices  # a deleted value is never carried over
    res = eng.restore()
    assert "/etc/hostname" in res.written and "/" + KEY in res.written
    assert read(eng, root_ns, "etc/hostname", "etc/hosts", "etc/localtime", "etc/timezone",
                KEY, "etc/unrelated.conf") == [
        "office-pc\n", "127.0.0.1\tlocalhost\n127.0.1.1\toffice-pc\n",
        "/usr/share/zoneinfo/Europe/Berlin", "Europe/Berlin\n", "key-v1\n", None]
    assert oct((eng.store.upper / KEY).stat().st_mode & 0o777) == "0o600"
    # only what differs from the image is in the fresh layer
    assert not (eng.store.upper / "etc/machine-id").exists()


def test_a_capture_never_takes_a_deleted_value(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)
    first = eng.state_save()
    edit(eng, root_ns, break_it)
    second = eng.state_save()  # a boot after the damage: the hostname is not taken
    assert first is not None and second is not None
    assert {v.key: v.value for v in second.values}["hostname.name"] == "office-pc"
    assert second.notes == (f"/etc/hostname deleted: kept office-pc from capture {first.id}",)
    assert eng.state_plan().items[0].written == "office-pc"


def test_keep_current_keeps_a_valid_current_value(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)
    eng.state_save()
    edit(eng, root_ns, lambda m: (m / KEY).write_text("key-v2, rotated on purpose\n"))
    with pytest.raises(UsageError, match="not a registry operator or a stash path"):
        eng.restore(keep_current=["/etc/passwd"])
    res = eng.restore(keep_current=["/" + KEY])
    assert res.kept_current == ("/" + KEY,) and "/" + KEY not in res.written
    assert read(eng, root_ns, KEY, "etc/hostname") == ["key-v2, rotated on purpose\n",
                                                       "office-pc\n"]


def test_a_new_layout_gets_well_formed_files(state_store: Engine, root_ns: Path) -> None:
    """A newer base drops /etc/timezone and keeps the locale in /etc/locale.conf: the
    registry's values are rendered the new way."""
    eng = state_store
    edit(eng, root_ns, configure)
    eng.state_save()

    def new_layout(m: Path) -> None:
        os.unlink(m / "etc/timezone")
        os.unlink(m / "etc/default/locale")
        (m / "etc/locale.conf").write_text("LANG=C.UTF-8\n")
        os.symlink("../locale.conf", m / "etc/default/locale")
        os.unlink(m / "etc/localtime")
        os.symlink("/usr/share/zoneinfo/Etc/UTC", m / "etc/localtime")
    edit(eng, root_ns, new_layout)
    eng.create(Kind.FULL, name="newbase")  # its values are captured with it: UTC, C.UTF-8
    assert {v.key: v.value for v in eng.state_values()}["timezone.zone"] == "Etc/UTC"
    eng.state_set({"timezone.zone": "Europe/Berlin", "locale.LANG": "de_DE.UTF-8"})
    eng.rollback("newbase")  # the same stack: a fresh layer with the captures applied
    assert read(eng, root_ns, "etc/timezone", "etc/localtime", "etc/locale.conf",
                "etc/default/locale", "etc/hostname") == [
        None, "/usr/share/zoneinfo/Europe/Berlin", "LANG=de_DE.UTF-8\n", "../locale.conf",
        "office-pc\n"]


def test_roll_back_applies_the_captures_to_the_older_stack(state_store: Engine,
                                                           root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)
    eng.create(Kind.INCREMENTAL, name="configured")  # captured with the restore point
    assert eng.state_captures()[0].reason == "restore-point"
    edit(eng, root_ns, lambda m: (m / "etc/unrelated.conf").write_text("later\n"))
    eng.rollback("base")
    assert read(eng, root_ns, "etc/hostname", KEY, "etc/unrelated.conf") == [
        "office-pc\n", "key-v1\n", None]


def test_stash_refuses_a_symlink_out_of_the_tree(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    eng.state_save()
    conf = eng.store.state_conf
    conf.write_text(statemod.DEFAULT_CONFIG.replace("  - /etc/wireguard\n",
                                                    "  - /etc/wireguard\n  - /etc/vpn\n"))
    edit(eng, root_ns, lambda m: (os.symlink("../../../../outside", m / "etc/vpn"),
                                  (m / "etc/hostname").write_text("still-captured\n")))
    with pytest.raises(StoreError, match=r"stash /etc/vpn: a symlink \(-> ../../../../outside\)"
                                         " out of the tree"):
        eng.state_save()
    assert eng.state_values()[0].value == "still-captured"  # the rest was captured


def test_reference_paths_stay_the_images_inside_a_stash(state_store: Engine,
                                                        root_ns: Path) -> None:
    eng = state_store
    eng.store.state_conf.write_text(
        "registry: [hostname]\nstash:\n  - /etc/app\nreference:\n  - /etc/app/main.conf\n")

    def change(m: Path) -> None:
        (m / "etc/app/main.conf").write_text("level = 99\n")
        (m / "etc/app/mine.conf").write_text("mine\n")
    edit(eng, root_ns, change)
    eng.state_save()
    assert not (eng.state_captures()[0] and
                (eng.store.captures / eng.state_captures()[0].id / "stash/etc/app/main.conf")
                .exists())
    plan = {i.path: i for i in eng.state_plan().items}
    assert plan["/etc/app/main.conf"].now == "changed in the writable layer"
    eng.restore()
    assert read(eng, root_ns, "etc/app/main.conf", "etc/app/mine.conf",
                "etc/app/extra.conf") == ["level = 1\n", "mine\n", "extra = yes\n"]


def test_captures_are_versioned_and_pruned(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    eng.store.state_conf.write_text("keep: 2\nregistry: [hostname]\n")
    for name in ("one", "two", "three"):
        eng.state_set({"hostname.name": name})
    caps = eng.state_captures()
    assert [c.reason for c in caps] == ["set", "set"]
    assert [v.value for c in caps for v in c.values] == ["three", "two"]
    with pytest.raises(UsageError, match=r"hostname\.name 'no way'"):
        eng.state_set({"hostname.name": "no way"})
    with pytest.raises(UsageError, match=r"unknown key 'hostname\.nmae'"):
        eng.state_set({"hostname.nmae": "x"})


def test_the_cli_twin(state_store: Engine, root_ns: Path) -> None:
    data = str(state_store.data_dir)
    run = ["--data", data, "--run-dir", str(root_ns / "run")]
    p = ibi("state", "set", "hostname.name=lab-7", "timezone.zone=Europe/Berlin", *run)
    assert p.returncode == 0 and "saved as capture" in p.stdout, p.stderr
    p = ibi("state", "get", "hostname.name", *run)
    assert (p.returncode, p.stdout) == (0, "lab-7\n")
    p = ibi("state", "list", "--json", *run)
    doc = json.loads(p.stdout)
    assert {"path": "/etc/hostname", "operator": "hostname"} in doc["paths"]
    assert doc["captures"][0]["reason"] == "set"
    p = ibi("restore", "--dry-run", *run)
    assert p.returncode == 0
    assert "  /etc/hostname [hostname]\n      now:  base-host\n      gets: lab-7" in p.stdout
    p = ibi("restore", "--dry-run", "--json", *run)
    assert json.loads(p.stdout)["state"]["items"][0]["written"] == "lab-7"
    p = ibi("restore", "--keep-current", "bogus", "--yes", *run)
    assert p.returncode == 2 and "--keep-current 'bogus'" in one_line_error(p)
    p = ibi("restore", "--keep-current", "hostname", "--yes", *run)
    assert p.returncode == 0 and "kept as they were: /etc/hostname" in p.stdout, p.stderr
    p = ibi("state", "diff", *run)
    assert p.returncode == 0 and "captured: lab-7" in p.stdout
    state_store.store.state_conf.write_text("registry:\n  - hostname\n\tstash: []\n")
    p = ibi("state", "list", *run)
    assert p.returncode == 1 and "state.yaml line 3: not valid YAML" in one_line_error(p)
    p = ibi("state", "save", "--boot", *run)  # not the store's normal boot: nothing to do
    assert p.returncode == 0 and "nothing captured" in p.stdout


# ---------------------------------------------------------------------- from the review

def test_damaged_captures_are_passed_over(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    good = eng.state_set({"hostname.name": "good-one"})
    bad = eng.state_set({"hostname.name": "newer"})
    meta = eng.store.captures / bad.id / "capture.yaml"
    meta.write_bytes(meta.read_bytes().replace(b"newer", b"\xff\xfe"))
    assert eng.state_captures()[0].id == good.id  # the damaged newest is passed over
    assert eng.state_plan().items[0].written == "good-one"
    # a crafted stash path cannot lead out of the capture
    meta.write_text("format: 1\ncreated: 2026-12-02T10:00:00Z\nreason: set\nstash:\n"
                    "  /etc/ssh/ssh_host_*:\n    /etc/ssh/../../../planted:\n"
                    "      what: x\n      digest: y\n")
    (meta.parent / "planted").write_text("outside the stash\n")
    ids = [c.id for c in eng.state_captures()]
    assert ids[0] == good.id and bad.id not in ids
    eng.state_set({"hostname.name": "after"})  # carries the stash of the good one only
    assert not (eng.store.state / "planted").exists()
    eng.store.state_conf.write_bytes(b"# caf\xe9\nregistry: [hostname]\n")
    p = ibi("state", "list", "--data", str(eng.data_dir), "--run-dir", str(root_ns / "run"))
    assert p.returncode == 1 and "state.yaml: not UTF-8 text" in one_line_error(p)


def test_a_value_set_by_the_owner_outlives_the_next_boot(state_store: Engine,
                                                         root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)
    eng.state_save()
    cap = eng.state_set({"hostname.name": "lab-7"})
    assert cap.id.split("-")[0] == f"{int(eng.state_captures()[1].id[:6]) + 1:06d}"
    assert eng.state_save("boot") is None  # the system still has office-pc: lab-7 stays
    assert eng.state_values()[0].value == "lab-7"
    edit(eng, root_ns, lambda m: (m / "etc/hostname").write_text("renamed-later\n"))
    assert eng.state_save("boot") is not None  # the owner renamed the system since
    assert eng.state_values()[0].value == "renamed-later"


def test_the_domain_follows_a_new_name(state_store: Engine) -> None:
    eng = state_store
    eng.state_set({"hostname.name": "office-pc", "hostname.fqdn": "office-pc.example.org"})
    eng.state_set({"hostname.name": "lab-7"})
    assert [v.value for v in eng.state_values()[:2]] == ["lab-7", "lab-7.example.org"]


def test_an_older_stores_preserve_list_is_imported_where_it_can_be(
        state_store: Engine) -> None:
    eng = state_store
    eng.store.state_conf.unlink()  # a store made before state.yaml
    eng.store.preserve_path.write_text("/etc/hostname\n/var/lib/app\n/var/lib/app/sub\n"
                                       "/tmp/x\n/etc/app\n")
    cfg = eng.state_config()
    assert "/var/lib/app" in cfg.stash and "/etc/app" in cfg.stash
    assert "/var/lib/app/sub" not in cfg.stash and "/tmp/x" not in cfg.stash
    eng.state_save()  # writes the declarations, with the imported paths, for the owner
    assert "  - /var/lib/app    # from .root_images/preserve" in eng.store.state_conf.read_text()


def test_a_queued_restore_keeps_the_choices(state_store: Engine, root_ns: Path) -> None:
    eng = state_store
    edit(eng, root_ns, configure)  # office-pc: valid, not captured (install's is base-host)
    with pytest.raises(UsageError, match="no config choices"):
        eng.queue("full", keep=["hostname"])
    eng.queue("restore", keep=["hostname"])
    assert eng.pending()["keep"] == "hostname"  # type: ignore[index]
    assert eng.run_pending() is not None and eng.pending() is None
    assert read(eng, root_ns, "etc/hostname", "etc/unrelated.conf") == ["office-pc\n", None]
