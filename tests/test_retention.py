"""Pins and the retention policy (maintenance/retention.py, prunecli.py) on real stores:
real squashfs restore points, real loop mounts, the engine's own delete.

The commands (ibi pin, unpin, prune) are in tests/test_retention_cli.py, the shared kit in
tests/retention_kit.py."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import stat
from pathlib import Path

import pytest

from maintenance import bootplan, retention
from maintenance.engine import Engine
from maintenance.errors import IbiError, NotFound, StoreError, UsageError
from maintenance.model import Kind, Trial
from maintenance.records import utcnow
from maintenance.status import human
from tests import retention_kit
from tests.retention_kit import AGES, images, reasons, restore_point, set_age, strict

# the fixture, by name: pytest finds it in this module
chain = retention_kit.chain


# ---------------------------------------------------------------------- pins

def test_pin_and_unpin_roundtrip_in_the_metadata(chain: Engine) -> None:
    st = chain.store
    before = st.read_meta("inc1")
    assert not before.pinned and "pinned" not in st.meta_path("inc1").read_text()
    assert chain.pin("inc1").pinned
    assert "pinned: true" in st.meta_path("inc1").read_text()
    assert st.read_meta("inc1") == dataclasses.replace(before, pinned=True)
    text = st.meta_path("inc1").read_text()
    assert chain.pin("inc1").pinned  # a no-op
    assert st.meta_path("inc1").read_text() == text
    assert not chain.pin("inc1", False).pinned
    assert "pinned" not in st.meta_path("inc1").read_text()
    assert st.read_meta("inc1") == before
    with pytest.raises(NotFound, match="no image named 'nope'"):
        retention.pin(chain, "nope")
    with pytest.raises(UsageError):
        retention.pin(chain, "../base")


# ---------------------------------------------------------------------- the plan

def test_the_policy_keeps_the_newest_and_the_young_with_what_they_need(
        chain: Engine) -> None:
    p = strict(chain)
    assert p.names == ("inc2", "inc1")  # the incremental before the image it sits on
    assert reasons(p) == {"base": "the base image (made by ibi init): only ibi delete "
                                  "removes it",
                          "f1": "in the active stack", "inc3": "in the active stack"}
    assert [i.reason for i in p.delete] == ["80 days old", "90 days old"]
    st = chain.store
    assert p.freed == sum(st.image_path(n).stat().st_size for n in ("inc1", "inc2"))
    assert all(i.size == st.image_path(i.name).stat().st_size for i in (*p.delete, *p.keep))

    p = retention.plan(chain, keep_last=4, keep_days=0)
    assert p.delete == () and p.freed == 0
    assert reasons(p)["inc2"] == reasons(p)["inc1"] == "one of the 4 newest"
    p = retention.plan(chain, keep_last=3, keep_days=0)
    assert p.delete == ()
    assert reasons(p)["inc2"] == "one of the 3 newest"
    assert reasons(p)["inc1"] == "needed by inc2"  # the parent of a kept incremental
    p = retention.plan(chain, keep_last=0, keep_days=85)
    assert p.delete == ()
    assert reasons(p)["inc2"] == "younger than 85 days"
    assert reasons(p)["inc1"] == "needed by inc2"
    p = retention.plan(chain, keep_last=2, keep_days=0)
    assert p.names == ("inc2", "inc1")
    assert p.delete[0].reason == "80 days old, not one of the 2 newest"
    set_age(chain, "inc2", -3)  # a wrong clock: kept, whatever the policy
    p = strict(chain)
    assert p.delete == () and reasons(p)["inc2"] == "created in the future (a wrong clock?)"
    set_age(chain, "inc2", AGES["inc2"])
    # "now" moves the ages
    later = utcnow() + dt.timedelta(days=1000)
    assert retention.plan(chain, keep_last=0, keep_days=999, now=later).names == \
        ("inc2", "inc1")


def test_the_policy_file_and_bad_counts(chain: Engine) -> None:
    st = chain.store
    st.policy_path.write_text("boot_tries: 0\nkeep_last: 3\nkeep_days: 0\n")
    p = retention.plan(chain)
    assert (p.keep_last, p.keep_days, p.delete) == (3, 0, ())
    assert retention.plan(chain, keep_last=0).names == ("inc2", "inc1")  # overridden
    st.policy_path.unlink()
    p = retention.plan(chain)  # the defaults: the 5 newest, 30 days
    assert (p.keep_last, p.keep_days, p.delete) == (5, 30, ())
    with pytest.raises(UsageError, match="--keep-last"):
        retention.plan(chain, keep_last=-1)
    with pytest.raises(UsageError, match="--keep-days"):
        retention.plan(chain, keep_days=-5)
    st.policy_path.write_text("keep_last: -2\n")
    with pytest.raises(StoreError, match=r"^policy: 'keep_last' "):
        retention.plan(chain)
    assert retention.plan(chain, keep_last=0, keep_days=0).names == ("inc2", "inc1")


def test_pinned_images_and_what_they_sit_on_are_kept(chain: Engine) -> None:
    chain.pin("inc1")
    p = strict(chain)
    assert p.names == ("inc2",) and reasons(p)["inc1"] == "pinned"
    chain.pin("inc1", False)
    chain.pin("inc2")
    p = strict(chain)
    assert p.delete == ()
    assert reasons(p)["inc2"] == "pinned" and reasons(p)["inc1"] == "needed by inc2"


def test_the_trials_good_stack_and_a_queued_roll_back_are_kept(chain: Engine) -> None:
    st = chain.store
    st.write_trial(Trial(("f1", "inc3"), ("base", "inc1", "inc2"), 3, utcnow(), "switch"))
    p = strict(chain)
    assert p.delete == ()
    assert reasons(p)["inc1"] == reasons(p)["inc2"] == "the last good stack (boot trial)"
    # a trial of another stack is void (roottab changed since): it keeps nothing
    st.write_trial(Trial(("f1",), ("base", "inc1", "inc2"), 3, utcnow(), "create"))
    assert strict(chain).names == ("inc2", "inc1")
    st.trial_path.write_text("tries: [\n")  # unreadable: its good stack is not known
    with pytest.raises(StoreError, match="trial"):
        strict(chain)
    st.clear_trial()

    chain.queue("rollback", name="inc1")
    p = strict(chain)
    assert p.names == ("inc2",)
    assert reasons(p)["inc1"] == "a roll back to inc1 is queued for the next boot"
    chain.cancel_pending()
    assert strict(chain).names == ("inc2", "inc1")


def test_roottab_prev_and_a_roll_back_are_kept(chain: Engine) -> None:
    chain.rollback("inc1")
    chain.store.clear_trial()
    assert chain.roottab() == ["base", "inc1"]
    p = strict(chain)
    assert p.names == ("inc2",)
    assert reasons(p)["f1"] == reasons(p)["inc3"] == "in roottab.prev (the boot fallback)"
    assert reasons(p)["inc1"] == "in the active stack"


def test_unreadable_metadata_is_never_pruned(chain: Engine) -> None:
    st = chain.store
    # damaged, but it still names what it sits on: that is kept too
    st.meta_path("inc2").write_text("format: 1\nname: inc2\nkind: incremental\n"
                                    "stack: [base, inc1]\n")
    p = strict(chain)
    assert p.delete == ()
    assert reasons(p)["inc2"].startswith("unreadable metadata")
    assert reasons(p)["inc1"] == "needed by inc2"
    st.meta_path("inc2").write_bytes(b"\xff\xfe garbage")
    p = strict(chain)
    assert p.names == ("inc1",) and "inc2" in reasons(p)
    assert "inc2.yaml is not UTF-8 text" in reasons(p)["inc2"]
    st.meta_path("inc2").unlink()  # an image file without metadata
    p = strict(chain)
    assert p.names == ("inc1",)
    assert reasons(p)["inc2"] == "no metadata (inc2.yaml is missing): only ibi delete removes it"
    # metadata whose image file is gone
    st.image_path("inc2").unlink()
    st.write_meta(dataclasses.replace(st.read_meta("inc1"), name="inc2",
                                      stack=("base", "inc1"), parent="inc1"))
    p = strict(chain)
    assert p.names == ("inc1",) and "image file is missing" in reasons(p)["inc2"]


def test_a_mounted_image_is_kept(chain: Engine, root_ns: Path) -> None:
    mnt = root_ns / "review"
    mnt.mkdir()
    chain.review("inc2", mnt)
    try:
        p = strict(chain)
        assert p.delete == ()
        assert reasons(p)["inc2"] == reasons(p)["inc1"] == "mounted (a live review?)"
        assert chain.prune(keep_last=0, keep_days=0).delete == ()
        assert chain.store.has_image("inc1") and chain.store.has_image("inc2")
    finally:
        chain.umount(mnt)
    assert strict(chain).names == ("inc2", "inc1")


# ---------------------------------------------------------------------- prune

def test_prune_deletes_exactly_the_plan_leaf_first(chain: Engine,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    st = chain.store
    names = images(st)
    planned = strict(chain)
    plan_text = bootplan.path(st).read_text()
    assert "image inc1 " in plan_text and "review inc1 " in plan_text
    dry = chain.prune(dry_run=True, keep_last=0, keep_days=0)
    assert dry == planned
    assert images(st) == names and bootplan.path(st).read_text() == plan_text

    deleted: list[str] = []
    real_delete = chain.delete

    def delete(name: str) -> None:
        # every image below it is still there when an incremental goes
        assert all(st.has_image(n) for n in st.read_meta(name).stack)
        real_delete(name)
        deleted.append(name)

    monkeypatch.setattr(chain, "delete", delete)
    done = chain.prune(keep_last=0, keep_days=0)
    assert done == planned and deleted == ["inc2", "inc1"]
    assert images(st) == ["base", "f1", "inc3"]
    assert not st.meta_path("inc1").exists() and not st.meta_path("inc2").exists()
    after = bootplan.path(st).read_text()
    assert "inc1" not in after and "inc2" not in after and "image f1 " in after
    assert bootplan.is_current(st)
    assert chain.prune(keep_last=0, keep_days=0).delete == ()  # nothing left to prune
    assert all(i.ok for i in chain.verify(all_images=True).items)


def install_kernel(root: Path, version: str) -> None:
    (root / "boot").mkdir(exist_ok=True)
    (root / f"boot/vmlinuz-{version}").write_bytes(b"kernel " + version.encode() * 100)
    (root / f"boot/initrd.img-{version}").write_bytes(b"initrd " + version.encode() * 300)
    (root / f"usr/lib/modules/{version}").mkdir(parents=True)


def test_kernels_only_pruned_images_boot_are_freed_with_them(engine: Engine,
                                                             root_ns: Path) -> None:
    tree = root_ns / "tree"
    tree.mkdir()
    install_kernel(tree, "6.1.0-a")
    engine.init(source_dir=tree)
    st = engine.store
    st.policy_path.write_text("boot_tries: 0\n")
    install_kernel(st.upper, "6.2.0-b")  # a kernel upgrade, squashed into inc1
    engine.create(Kind.INCREMENTAL, name="inc1")
    new = st.read_meta("inc1").kernels[0]
    assert new.version == "6.2.0-b" and st.kernel_dir(new.id).is_dir()
    for path in ("boot/vmlinuz-6.2.0-b", "boot/initrd.img-6.2.0-b",
                 "usr/lib/modules/6.2.0-b"):  # removed again: whiteouts in the layer
        (st.upper / path).parent.mkdir(parents=True, exist_ok=True)
        os.mknod(st.upper / path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
    engine.create(Kind.FULL, name="f1")
    assert [k.version for k in st.read_meta("f1").kernels] == ["6.1.0-a"]
    restore_point(engine, "inc3")
    st.clear_trial()
    p = strict(engine)
    assert p.names == ("inc1",) and p.kernels == (new.id,)
    assert p.freed == st.image_path("inc1").stat().st_size + new.size
    st.policy_path.write_text("keep_last: 0\nkeep_days: 0\n")
    assert retention.shortage_hint(engine, need=p.freed, free=0) == \
        f"ibi prune would free {human(p.freed)} (1 restore point: inc1)"
    assert engine.prune(keep_last=0, keep_days=0) == p
    assert not st.kernel_dir(new.id).exists()
    assert st.kernel_ids() == [k.id for k in st.read_meta("f1").kernels]


def test_prune_stops_at_the_first_failure_and_says_what_was_deleted(
        chain: Engine, root_ns: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mnt = root_ns / "review"
    mnt.mkdir()
    real_delete = chain.delete

    def delete(name: str) -> None:  # a Live Review of inc1 starts meanwhile
        if name == "inc1":
            chain.review("inc1", mnt)
        real_delete(name)

    monkeypatch.setattr(chain, "delete", delete)
    try:
        with pytest.raises(IbiError, match=r"prune stopped at inc1: 'inc1' is mounted .*; "
                                           r"deleted so far: inc2$"):
            chain.prune(keep_last=0, keep_days=0)
        assert chain.store.has_image("inc1") and not chain.store.has_image("inc2")
    finally:
        chain.umount(mnt)


def test_prune_refuses_what_was_not_confirmed(chain: Engine) -> None:
    with pytest.raises(StoreError, match="would now also delete inc1; nothing was deleted"):
        retention.prune(chain, keep_last=0, keep_days=0, expect=["inc2"])
    assert chain.store.has_image("inc2")
    chain.pin("inc1")  # fewer than confirmed: fine
    assert retention.prune(chain, keep_last=0, keep_days=0,
                           expect=["inc2", "inc1"]).names == ("inc2",)
    assert images(chain.store) == ["base", "f1", "inc1", "inc3"]


def test_shortage_hint(chain: Engine) -> None:
    chain.store.policy_path.write_text("boot_tries: 0\nkeep_last: 0\nkeep_days: 0\n")
    freed = strict(chain).freed
    hint = retention.shortage_hint(chain, need=freed, free=0)
    assert hint is not None
    assert hint.startswith("ibi prune would free ") and \
        hint.endswith("(2 restore points: inc2, inc1)")
    hint = retention.shortage_hint(chain, need=freed + 1, free=0)
    assert hint is not None and "not enough alone" in hint
    assert retention.shortage_hint(chain, need=10 << 40) is not None  # the real free space
    chain.store.policy_path.write_text("boot_tries: 0\n")  # the 5 newest: all of them
    assert retention.shortage_hint(chain, need=1, free=0) is None
    chain.store.policy_path.write_text("keep_last: [\n")  # never raises
    assert retention.shortage_hint(chain, need=1, free=0) is None
