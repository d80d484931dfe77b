"""Kernels per restore point on a real store, real mounts and fake kernel trees: which
kernel each boot entry gets after init, an upgrade in the writable layer, create, restore,
roll back and delete; shared files kept once; verify; space; crash leftovers."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from maintenance import bootloader, cli, kernels
from maintenance.engine import Engine
from maintenance.errors import NoSpace
from maintenance.model import Kind
from maintenance.wording import notice_text
from tests.fstree import build_base

pytestmark = pytest.mark.root

OLD, MID, NEW = "6.1.0-9-amd64", "6.1.0-10-amd64", "6.12.9+deb13-amd64"


def add_kernel(root: Path, version: str, initrd: bool = True, size: int = 40_000) -> None:
    """A kernel package's files: vmlinuz, the initramfs its hook builds, a module tree."""
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot" / f"vmlinuz-{version}").write_bytes(os.urandom(size))
    if initrd:
        (root / "boot" / f"initrd.img-{version}").write_bytes(os.urandom(size * 2))
    mod = root / "usr/lib/modules" / version / "kernel/drivers/net"
    mod.mkdir(parents=True)
    (mod / "dummy.ko").write_bytes(version.encode())


def remove_kernel(root: Path, version: str) -> None:
    for p in (root / "boot" / f"vmlinuz-{version}", root / "boot" / f"initrd.img-{version}"):
        p.unlink(missing_ok=True)
    for p in sorted((root / "usr/lib/modules" / version).rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    (root / "usr/lib/modules" / version).rmdir()


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    build_base(tree)
    add_kernel(tree, OLD)
    add_kernel(tree, MID)
    add_kernel(tree, "6.0.0-broken", initrd=False)  # no initramfs: cannot boot a stack
    engine.init(source_dir=tree)
    bootloader.write_settings(engine.store, bootloader.Settings(
        data_spec="UUID=1234", data_fs_uuid="1234", kernel=OLD))
    engine.refresh_boot_files()
    return engine


def versions(eng: Engine, name: str) -> list[str]:
    return [k.version for k in eng.store.read_meta(name).kernels]


def grub_kernels(eng: Engine) -> dict[str, str]:
    """Each GRUB entry id -> the kernel version its `linux` line loads (from the path)."""
    out, ident = {}, None
    for line in bootloader.cfg_path(eng.store).read_text().splitlines():
        if m := re.match(r"menuentry .* --id (\S+) ", line):
            ident = m.group(1)
        elif (m := re.match(r"\s+linux /boot/kernels/(\S+)/vmlinuz ", line)) and ident:
            out[ident] = m.group(1).rsplit("-", 1)[0]  # <version>-<sha12>
    return out


def upgrade_in_layer(eng: Engine, mnt: Path, version: str) -> None:
    """What `apt install linux-image-…` does in the running system, then its hook."""
    mnt.mkdir(exist_ok=True)
    eng.mount(mnt)
    try:
        add_kernel(mnt, version)
        # the base's kernel without an initramfs is still there, and still said so
        assert [w for w in eng.sync_kernels() if "6.0.0-broken" not in w] == []
    finally:
        eng.umount(mnt)


def test_init_keeps_the_trees_kernels_newest_first(engine: Engine, root_ns: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    tree = root_ns / "tree"
    build_base(tree)
    add_kernel(tree, OLD)
    add_kernel(tree, MID)
    add_kernel(tree, "6.0.0-broken", initrd=False)
    engine.init(source_dir=tree)
    assert "Linux 6.0.0-broken has no initramfs" in caplog.text
    bootloader.write_settings(engine.store, bootloader.Settings(
        data_spec="UUID=1234", data_fs_uuid="1234", kernel=OLD))
    engine.refresh_boot_files()
    store = engine
    assert versions(store, "base") == [MID, OLD]  # 6.1.0-10 > 6.1.0-9 (not by string)
    ids = store.store.kernel_ids()
    assert len(ids) == 2 and all(i.startswith((OLD, MID)) for i in ids)
    for k in store.store.read_meta("base").kernels:
        vmlinuz, initrd = store.store.kernel_files(k.id)
        assert kernels.file_sha256(vmlinuz) == k.vmlinuz_sha256
        assert k.size == vmlinuz.stat().st_size + initrd.stat().st_size
    st = store.status()
    assert st.stack[0].kernels == (MID, OLD) and st.boot_kernel == MID
    assert grub_kernels(store) == {"ibi": MID, "ibi-maintenance": MID, "ibi-review-base": MID}


def test_upgrade_in_the_layer_is_the_next_boot_but_not_maintenance(
        store: Engine, root_ns: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    st = store.status()
    assert st.layer_kernels == (NEW,) and st.boot_kernel == NEW
    rec = store.store.read_layer_kernels()
    assert rec is not None and [k.version for k in rec[2]] == [NEW, MID, OLD]
    assert cli.main(["status", "--data", str(store.data_dir),
                     "--run-dir", str(store.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"        kernel {MID} (also {OLD})\n" in out
    assert f"kernel installed in the layer (Restore System discards it): {NEW}\n" in out
    assert f"Next boot: Linux {NEW}\n" in out
    assert cli.main(["boot-entries", "--data", str(store.data_dir),
                     "--run-dir", str(store.run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"  normal boot: Linux {NEW}\n  Maintenance Mode: Linux {MID}\n" in out
    assert grub_kernels(store) == {"ibi": NEW, "ibi-maintenance": MID, "ibi-review-base": MID}
    assert len(store.store.kernel_ids()) == 3
    # the hook runs again (another package's postinst): nothing changes, nothing copied
    before = (store.store.layer / "kernels.yaml").read_text()
    mnt = root_ns / "mnt"
    mnt.mkdir(exist_ok=True)
    store.mount(mnt)
    try:
        store.sync_kernels()
    finally:
        store.umount(mnt)
    assert (store.store.layer / "kernels.yaml").read_text() == before


def test_incremental_takes_the_layers_kernel_once(store: Engine, root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    layer_ids = set(store.store.kernel_ids())
    store.create(Kind.INCREMENTAL, name="inc")
    assert versions(store, "inc") == [NEW, MID, OLD]
    assert set(store.store.kernel_ids()) == layer_ids  # the layer's copy is reused
    assert not (store.store.layer / "kernels.yaml").exists()  # a fresh layer
    assert store.status().boot_kernel == NEW
    assert grub_kernels(store) == {"ibi": NEW, "ibi-maintenance": NEW,
                                   "ibi-review-inc": NEW, "ibi-review-base": MID}
    # an incremental that changes no kernel keeps its parent's, reading no tree
    mnt = root_ns / "mnt"
    mnt.mkdir(exist_ok=True)
    store.mount(mnt)
    (mnt / "etc/motd").write_text("hi\n")
    store.umount(mnt)
    store.create(Kind.INCREMENTAL, name="inc2")
    assert store.store.read_meta("inc2").kernels == store.store.read_meta("inc").kernels


def test_rollback_and_delete_switch_kernels_and_free_files(store: Engine,
                                                           root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    store.create(Kind.INCREMENTAL, name="inc")
    store.rollback("base")
    assert store.status().boot_kernel == MID
    assert grub_kernels(store)["ibi"] == MID
    # inc is in roottab.prev: make another change first, then delete it
    upgrade_in_layer(store, root_ns / "mnt", "6.0.0-1-amd64")
    store.create(Kind.INCREMENTAL, name="inc3")
    assert versions(store, "inc3") == ["6.0.0-1-amd64", MID, OLD]  # new first, even if older
    new_ids = [i for i in store.store.kernel_ids() if i.startswith(NEW)]
    assert new_ids
    store.delete("inc")
    assert not any(i.startswith(NEW) for i in store.store.kernel_ids())
    assert not store.store.kernel_dir(new_ids[0]).exists()


def test_restore_discards_the_layers_kernel(store: Engine, root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    assert store.status().boot_kernel == NEW
    store.restore()
    st = store.status()
    assert st.boot_kernel == MID and st.layer_kernels == ()
    assert grub_kernels(store)["ibi"] == MID
    assert not any(i.startswith(NEW) for i in store.store.kernel_ids())  # copy deleted


def test_queued_actions_boot_the_kernel_of_what_they_leave(store: Engine,
                                                           root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    store.create(Kind.INCREMENTAL, name="inc")
    upgrade_in_layer(store, root_ns / "mnt", "6.13.1-amd64")
    assert grub_kernels(store)["ibi"] == "6.13.1-amd64"
    store.queue("restore")  # runs in the initramfs after GRUB loaded the kernel
    assert grub_kernels(store)["ibi"] == NEW
    store.queue("rollback", name="base")
    assert grub_kernels(store)["ibi"] == MID
    store.cancel_pending()
    assert grub_kernels(store)["ibi"] == "6.13.1-amd64"
    store.queue("rollback", name="base")
    assert store.run_pending() == "rolled back: the stack is base"
    assert store.roottab() == ["base"] and grub_kernels(store)["ibi"] == MID


def test_kernel_removed_in_the_layer(store: Engine, root_ns: Path) -> None:
    mnt = root_ns / "mnt"
    mnt.mkdir(exist_ok=True)
    store.mount(mnt)
    try:
        remove_kernel(mnt, MID)  # apt purge of the newer kernel: its postrm hook
        store.sync_kernels()
        assert store.status().layer_kernels == ()  # none new; one less
        assert store.status().boot_kernel == OLD and grub_kernels(store)["ibi"] == OLD
        add_kernel(mnt, MID)  # a rebuilt package of the same version: another vmlinuz
        store.sync_kernels()
        assert store.status().layer_kernels == (MID,)
        base_mid = store.store.read_meta("base").kernels[0]
        rec = store.store.read_layer_kernels()
        assert rec is not None and rec[2][0].id != base_mid.id
    finally:
        store.umount(mnt)
    store.restore()
    assert store.status().layer_kernels == () and grub_kernels(store)["ibi"] == MID


def test_full_restore_point_and_verify(store: Engine, root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    meta = store.create(Kind.FULL, name="full")
    assert [k.version for k in meta.kernels] == [NEW, MID, OLD]
    assert store.verify(all_images=True).ok
    k = meta.kernels[0]
    _, initrd = store.store.kernel_files(k.id)
    data = bytearray(initrd.read_bytes())
    data[100] ^= 0xFF
    initrd.write_bytes(bytes(data))
    bad = [i for i in store.verify().items if not i.ok]
    assert [i.name for i in bad] == [f"kernel {k.id}"]
    assert "corrupted" in (bad[0].problem or "")


def test_space_check_counts_the_kernel(store: Engine, root_ns: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    mnt = root_ns / "mnt"
    mnt.mkdir(exist_ok=True)
    store.mount(mnt)
    try:
        add_kernel(mnt, NEW, size=3 << 20)
        need = kernels.needed_bytes(mnt, store.store.read_meta("base").kernels)
        assert need == 9 << 20  # vmlinuz + initramfs (twice its size), nothing known
        assert kernels.needed_bytes(mnt, []) > need  # the base's kernels would count too
        import psutil

        real = psutil.disk_usage

        def tight(path: str):  # type: ignore[no-untyped-def]
            u = real(path)
            return u._replace(free=need)  # room for everything but the margin

        monkeypatch.setattr(psutil, "disk_usage", tight)
        with pytest.raises(NoSpace, match="keep the new kernel"):
            store.sync_kernels()
    finally:
        store.umount(mnt)
    assert not any(i.startswith(NEW) for i in store.store.kernel_ids())


def test_crash_leftovers_are_cleaned(store: Engine) -> None:
    st = store.store
    (st.kernels / ".tmp-6.9-abc").mkdir()
    (st.kernels / ".tmp-6.9-abc" / "vmlinuz").write_bytes(b"half")
    orphan = st.kernels / "6.9-0123456789ab"  # copied, but the image never committed
    orphan.mkdir()
    assert any("unfinished .tmp-6.9-abc" in notice_text(n) for n in store.status().notices)
    store.recover()
    assert not (st.kernels / ".tmp-6.9-abc").exists() and not orphan.exists()
    assert len(st.kernel_ids()) == 2


def test_import_of_a_squashfs_keeps_its_kernels(engine: Engine, root_ns: Path) -> None:
    import subprocess

    tree = root_ns / "tree"
    build_base(tree)
    add_kernel(tree, OLD)
    image = root_ns / "given.sqfs"
    subprocess.run(["mksquashfs", str(tree), str(image), "-quiet", "-no-progress"],
                   check=True)
    meta = engine.init(image=image)
    assert [k.version for k in meta.kernels] == [OLD]
    assert engine.store.kernel_ids() == [meta.kernels[0].id]
    assert not list((engine.run_dir / "stacks").glob("image-*"))  # the look inside is gone


def test_create_space_check_counts_the_new_kernel(store: Engine, root_ns: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import psutil

    from maintenance import create as createmod
    from maintenance import layer as layerfs

    mnt = root_ns / "mnt"
    mnt.mkdir()
    store.mount(mnt)
    add_kernel(mnt, NEW, size=3 << 20)
    store.umount(mnt)
    lay = layerfs.stats(store.store.upper)
    enough_without_kernel = lay.bytes + lay.bytes // 100 + createmod.SPACE_MARGIN
    real = psutil.disk_usage
    monkeypatch.setattr(psutil, "disk_usage", lambda p: real(p)._replace(
        free=enough_without_kernel + (1 << 20)))
    with pytest.raises(NoSpace, match="squash the writable layer"):
        store.create(Kind.INCREMENTAL, name="inc")
    assert store.roottab() == ["base"] and not store.store.has_image("inc")
    monkeypatch.setattr(psutil, "disk_usage", real)
    assert versions(store, store.create(Kind.INCREMENTAL, name="inc").name)[0] == NEW


def test_kernels_the_old_menu_boots_stay_while_it_cannot_be_renewed(store: Engine,
                                                                   root_ns: Path) -> None:
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    conf = store.store.bootloader_conf
    good = conf.read_text()
    conf.write_text("data_spec: [unclosed\n")
    store.restore()  # GRUB's menu cannot be rewritten: it still boots the layer's kernel
    new_id = next(i for i in store.store.kernel_ids() if i.startswith(NEW))
    assert f"/boot/kernels/{new_id}/vmlinuz" in bootloader.cfg_path(store.store).read_text()
    conf.write_text(good)
    store.refresh_boot_files()
    assert grub_kernels(store)["ibi"] == MID
    assert not store.store.kernel_dir(new_id).exists()


def test_live_review_from_the_menu_restarts_into_the_points_kernel(store: Engine) -> None:
    import shutil
    import subprocess

    from maintenance.errors import StoreError

    assert store.review_kernel_switch("base") == MID  # the host runs another kernel
    env = bootloader.cfg_path(store.store).with_name("grubenv")
    head = "# GRUB Environment Block\nsaved_entry=ibi\n"
    env.write_text(head + "#" * (1024 - len(head)))  # a 1 KiB block, as GRUB keeps it
    store.boot_once("ibi-review-base")
    text = env.read_text()
    assert len(text) == 1024 and "saved_entry=ibi\nnext_entry=ibi-review-base\n" in text
    if shutil.which("grub-editenv"):  # GRUB's own tool reads it back
        out = subprocess.run(["grub-editenv", str(env), "list"], capture_output=True,
                             text=True, check=True).stdout
        assert "next_entry=ibi-review-base" in out
    with pytest.raises(StoreError, match="no entry 'ibi-review-nope'"):
        store.boot_once("ibi-review-nope")


def test_a_rebuilt_initramfs_is_a_new_copy(store: Engine, root_ns: Path) -> None:
    mnt = root_ns / "mnt"
    mnt.mkdir()
    store.mount(mnt)
    try:  # dracut run again in the running system (new firmware, crypttab...)
        (mnt / "boot" / f"initrd.img-{MID}").write_bytes(os.urandom(1000))
        store.sync_kernels()
    finally:
        store.umount(mnt)
    base_mid = store.store.read_meta("base").kernels[0]
    rec = store.store.read_layer_kernels()
    assert rec is not None and rec[2][0].version == MID and rec[2][0].id != base_mid.id
    assert rec[2][0].vmlinuz_sha256 == base_mid.vmlinuz_sha256
    assert store.status().boot_kernel == MID and grub_kernels(store)["ibi"] == MID
    store.create(Kind.INCREMENTAL, name="inc")
    assert store.store.read_meta("inc").kernels[0].id == rec[2][0].id


def test_kernels_without_vmlinuz_in_the_tree_stay(store: Engine, root_ns: Path) -> None:
    """A separate /boot is left out of the images: the tree has the modules, not vmlinuz."""
    mnt = root_ns / "mnt"
    mnt.mkdir()
    store.mount(mnt)
    for p in (mnt / "boot").iterdir():
        p.unlink()
    store.umount(mnt)
    meta = store.create(Kind.FULL, name="full")
    assert [k.version for k in meta.kernels] == [MID, OLD]
    assert grub_kernels(store)["ibi"] == MID


def test_image_trees_cannot_point_outside(engine: Engine, root_ns: Path) -> None:
    outside = root_ns / "outside"
    add_kernel(outside, NEW)
    tree = root_ns / "tree"
    build_base(tree)
    (tree / "usr/lib/modules").mkdir(parents=True)
    (tree / "usr/lib/modules" / NEW).mkdir()
    os.symlink("../outside/boot", tree / "boot")
    assert kernels.scan(tree) == {}
    (tree / "boot").unlink()
    (tree / "boot").mkdir()
    os.symlink(outside / "boot" / f"vmlinuz-{NEW}", tree / "boot" / f"vmlinuz-{NEW}")
    assert kernels.scan(tree) == {}


def test_one_changing_command_at_a_time(store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    from maintenance import store as storemod
    from maintenance.errors import InUse

    monkeypatch.setattr(storemod, "LOCK_WAIT", 0.3)
    fd = os.open(store.store.root / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another ibi command, e.g. the kernel hook
    try:
        with pytest.raises(InUse, match=r"busy: .*process .* is changing the store"):
            store.restore()
        assert store.status().stack  # reading needs no lock
    finally:
        os.close(fd)
    store.restore()


def test_queued_rollback_target_cannot_be_deleted(store: Engine, root_ns: Path) -> None:
    store.trial_tries = 0  # no boot completes here: a trial would keep base (test_updates)
    upgrade_in_layer(store, root_ns / "mnt", NEW)
    store.create(Kind.FULL, name="full")
    upgrade_in_layer(store, root_ns / "mnt", "6.13.1-amd64")
    store.create(Kind.FULL, name="full2")  # base is in neither roottab nor roottab.prev
    assert store.delete_blocker("base") is None
    store.queue("rollback", name="base")
    assert "queued" in (store.delete_blocker("base") or "")
    assert grub_kernels(store)["ibi-maintenance"] == MID  # the queued action runs first
    store.cancel_pending()
    assert grub_kernels(store)["ibi-maintenance"] == "6.13.1-amd64"


def test_the_boot_plan_names_the_layer(store: Engine) -> None:
    from maintenance import bootplan

    before = store.store.layer_id()
    assert f"\nlayer {before}\n" in bootplan.path(store.store).read_text()
    store.restore()
    assert f"\nlayer {store.store.layer_id()}\n" in bootplan.path(store.store).read_text()
    assert store.store.layer_id() != before
    store.store.renew_layer_id()  # as a power cut after the swap would leave it
    assert not bootplan.is_current(store.store)
