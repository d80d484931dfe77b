"""Updates that cannot strand a machine, on real stores and real mounts: switch (with its
trial), the boots the initramfs counts, boot-ok, the automatic fallback (the good stack
with its own writable layer back), restore --undo (and undoing the undo), and a crash at
every step of switch, undo and fallback leaving the old state or the new one."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

from maintenance import bootplan, store
from maintenance import pending as pending_mod
from maintenance import restore as restore_mod
from maintenance.cli import main
from maintenance.engine import Engine
from maintenance.errors import InUse, NotFound, UsageError
from maintenance.model import Kind
from maintenance.wording import fallback_text, notice_text
from tests.fstree import build_base, snapshot
from tests.test_crash import CRASH, after_nth, crash_in_child


def write_in_layer(eng: Engine, rel: str, text: str) -> None:
    p = eng.store.upper / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def count_boot(eng: Engine) -> None:
    """What the initramfs does before it assembles a stack on trial (ibi-check.sh)."""
    with open(eng.store.boots_path, "a") as f:
        f.write("boot 1764700000\n")


def view(eng: Engine, root: Path) -> dict[str, str]:
    """The mounted system's files (path -> text for the ones a test writes, else the
    digest)."""
    mnt = root / "view"
    mnt.mkdir(exist_ok=True)
    eng.mount(mnt)
    try:
        snap = snapshot(mnt)
        return {k: ((mnt / k).read_text() if k.startswith("root/") and "sha" in v
                    else str(v.get("sha"))) for k, v in snap.items()}
    finally:
        eng.umount(mnt)


@pytest.fixture
def two_stacks(engine: Engine, root_ns: Path) -> Engine:
    """base, and "new" (a full image of base + one file): the active stack is [base],
    with a writable layer holding notes.txt."""
    tree = root_ns / "tree"
    build_base(tree)
    engine.init(source_dir=tree)
    write_in_layer(engine, "etc/new-release", "new\n")
    engine.trial_tries = 0
    engine.create(Kind.FULL, name="new")
    engine.rollback("base")
    engine.trial_tries = None
    write_in_layer(engine, "root/notes.txt", "work on base\n")
    engine.store.clear_fallback()
    assert engine.trial() is None
    return engine


def test_switch_arms_a_trial_and_boot_ok_ends_it(two_stacks: Engine) -> None:
    eng = two_stacks
    assert eng.rollback("new", reason="switch") == ("new",)
    t = eng.trial()
    assert t is not None and t.stack == ("new",) and t.good == ("base",)
    assert t.tries == 3 and t.reason == "switch" and t.good_layer
    plan = bootplan.path(eng.store).read_text()
    assert "\ntrial 3\ngood base\n" in plan
    assert "menu new\nmenu base\n" in plan  # the fallback runs the good stack's own ibi
    # the layer it set aside remembers its stack
    entry, lid, stack = eng.store.set_aside_layers()[0]  # the newest
    assert stack == ["base"] and lid == t.good_layer
    assert (entry / "upper/root/notes.txt").read_text() == "work on base\n"
    count_boot(eng)
    assert eng.status().boots == 1
    ended = eng.boot_ok()
    assert ended == t
    assert eng.trial() is None and not eng.store.boots_path.exists()
    assert "trial" not in bootplan.path(eng.store).read_text()
    assert eng.boot_fallback() is None  # nothing on trial: nothing to do
    assert eng.roottab() == ["new"]


def test_fallback_after_the_tries_puts_the_good_stack_back_with_its_layer(
        two_stacks: Engine, root_ns: Path) -> None:
    eng = two_stacks
    eng.trial_tries = 2
    eng.rollback("new", reason="switch")
    write_in_layer(eng, "root/on-new.txt", "written on the bad stack\n")
    count_boot(eng)
    assert eng.boot_fallback() is None  # one boot of two: not yet
    trial, boots = eng.boot_failed("health check 50-fail exited 1")
    assert trial is not None and boots == 1
    count_boot(eng)
    fb = eng.boot_fallback()
    assert fb is not None and fb.failed == ("new",) and fb.good == ("base",)
    assert fb.boots == 2 and fb.why == "health check 50-fail exited 1"
    assert eng.roottab() == ["base"]
    assert eng.trial() is None and not eng.store.trial_path.exists()
    snap = view(eng, root_ns)
    assert snap["root/notes.txt"] == "work on base\n"  # its own layer, whole
    assert "root/on-new.txt" not in snap
    st = eng.status()
    assert st.fallback == fb
    text = fallback_text(fb)
    assert any(notice_text(n) == text for n in st.notices)
    assert "stack [new] failed 2 boots (health check 50-fail exited 1); back on [base]" \
        in text
    # the bad stack's layer is set aside: undo goes there again
    assert eng.undo_plan()[1] == ["new"]  # type: ignore[index]
    assert bootplan.is_current(eng.store)


def test_fallback_without_the_good_layer_renders_a_fresh_one(two_stacks: Engine) -> None:
    eng = two_stacks
    eng.trial_tries = 1
    eng.rollback("new", reason="switch")
    eng.purge()  # the good stack's layer is gone
    count_boot(eng)
    fb = eng.boot_fallback()
    assert fb is not None and eng.roottab() == ["base"]
    assert not (eng.store.upper / "root/notes.txt").exists()


def test_a_create_that_changes_roottab_is_on_trial(two_stacks: Engine) -> None:
    eng = two_stacks
    eng.create(Kind.INCREMENTAL, name="inc")
    t = eng.trial()
    assert t is not None and t.stack == ("base", "inc") and t.good == ("base",)
    assert t.reason == "create" and t.good_layer is None
    # a second change before any boot completed keeps the last *good* stack
    write_in_layer(eng, "etc/more", "x\n")
    eng.create(Kind.INCREMENTAL, name="inc2")
    t2 = eng.trial()
    assert t2 is not None and t2.good == ("base",) and t2.stack == ("base", "inc", "inc2")
    # switching back to the good stack is no trial at all
    eng.rollback("base")
    assert eng.trial() is None


def test_policy_sets_the_tries_and_zero_turns_them_off(two_stacks: Engine) -> None:
    eng = two_stacks
    eng.store.policy_path.write_text("boot_tries: 5\n")
    eng.rollback("new", reason="switch")
    assert eng.trial().tries == 5  # type: ignore[union-attr]
    eng.rollback("base")
    eng.store.policy_path.write_text("boot_tries: 0\n")
    eng.rollback("new", reason="switch")
    assert eng.trial() is None
    eng.store.policy_path.write_text("boot_tries: many\n")
    assert any("policy" in notice_text(n) for n in eng.status().notices)


def test_the_good_stack_cannot_be_deleted_while_on_trial(two_stacks: Engine) -> None:
    eng = two_stacks
    eng.rollback("new", reason="switch")
    eng.rollback("new")  # nothing changes: still on trial
    eng.store.write_roottab(["new"])  # roottab.prev now names new too
    with pytest.raises(InUse, match="falls back to"):
        eng.delete("base")


def test_undo_puts_back_the_restored_layer_and_undo_again_swaps_back(
        two_stacks: Engine, root_ns: Path) -> None:
    eng = two_stacks
    eng.restore()
    write_in_layer(eng, "root/after-restore.txt", "after\n")
    res = eng.undo()
    assert res.stack == ("base",) and res.previous == ("base",)
    snap = view(eng, root_ns)
    assert snap["root/notes.txt"] == "work on base\n"
    assert "root/after-restore.txt" not in snap
    res2 = eng.undo()
    snap = view(eng, root_ns)
    assert "root/notes.txt" not in snap and "root/after-restore.txt" in snap
    assert res2.put_back == res.set_aside
    assert not (eng.store.layer / store.FROM_TRASH).exists()


def test_undo_of_a_switch_goes_back_to_the_old_stack(two_stacks: Engine, root_ns: Path) -> None:
    eng = two_stacks
    eng.rollback("new", reason="switch")
    res = eng.undo()
    assert eng.roottab() == ["base"] and res.previous == ("new",)
    assert eng.trial() is None  # back on the good stack
    assert view(eng, root_ns)["root/notes.txt"] == "work on base\n"


def test_undo_with_nothing_set_aside_is_refused(engine: Engine, root_ns: Path) -> None:
    build_base(root_ns / "tree")
    engine.init(source_dir=root_ns / "tree")
    with pytest.raises(NotFound, match="no set-aside writable layer"):
        engine.undo()
    write_in_layer(engine, "etc/x", "1")
    engine.create(Kind.INCREMENTAL, name="inc")
    with pytest.raises(NotFound):  # a layer a restore point cleared is never put back
        engine.undo()


def test_cli_switch_undo_boot_ok_boot_failed(two_stacks: Engine,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    eng = two_stacks
    d = ["--data", str(eng.data_dir), "--run-dir", str(eng.run_dir)]
    assert main(["switch", "new", "--yes", "--tries", "2", *d]) == 0
    out = capsys.readouterr().out
    assert "stack is now: new" in out and "on trial: 2 boots" in out
    count_boot(eng)
    assert main(["boot-failed", "--why", "demo failure", *d]) == 0
    assert "boot 1 of 2 of [new] failed (demo failure); 1 more before the fallback to " \
        "[base]" in capsys.readouterr().out
    assert main(["status", *d]) == 0
    out = capsys.readouterr().out
    assert "on trial (switch): 1 of 2 boots used" in out and "demo failure" in out
    assert main(["boot-ok", "--json", *d]) == 0
    assert json.loads(capsys.readouterr().out)["ended"]["stack"] == ["new"]
    assert main(["restore", "--undo", "--dry-run", *d]) == 0
    assert "with its stack [base]" in capsys.readouterr().out
    assert main(["restore", "--undo", "--yes", *d]) == 0
    assert "the stack is [base]" in capsys.readouterr().out
    assert main(["switch", "nope", "--yes", *d]) == 1
    assert "no image named 'nope'" in capsys.readouterr().err
    assert main(["switch", "new", "--yes", "--tries", "99", *d]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") <= 2 and "boot tries are 0" in err
    # the undo put [base] on trial (good: [new], blessed above); a boot completes
    assert eng.trial().good == ("new",)  # type: ignore[union-attr]
    assert main(["boot-ok", *d]) == 0
    assert "marked good: [base]" in capsys.readouterr().out
    # queued for the next boot: carried out by pending --run, with its tries
    assert main(["switch", "new", "--yes", "--next-boot", "--tries", "4", *d]) == 0
    assert eng.pending()["reason"] == "switch"  # type: ignore[index]
    assert main(["pending", "--run", *d]) == 0
    assert "switched: the stack is new" in capsys.readouterr().out
    assert eng.trial().tries == 4  # type: ignore[union-attr]


def test_boot_failed_on_a_good_stack_never_reboots(two_stacks: Engine,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data", str(two_stacks.data_dir)]
    assert main(["boot-failed", "--reboot", *d]) == 0  # would fail: no systemctl reboot here
    assert "not on trial: no reboot" in capsys.readouterr().out


def test_unreadable_trial_is_reported_and_cancelled(two_stacks: Engine) -> None:
    eng = two_stacks
    eng.store.trial_path.write_text("stack: [1, 2\n")
    assert eng.trial() is None
    assert any("trial: unreadable" in notice_text(n) for n in eng.status().notices)
    assert "trial" not in bootplan.path(eng.store).read_text().split("ibi-boot-plan")[1]
    eng.cancel_trial()
    assert not eng.store.trial_path.exists()


def test_tries_are_checked() -> None:
    with pytest.raises(UsageError):
        pending_mod.check_tries(-1)


# --- a crash at every step: the old state or the new one ---------------------------------

def state_of(eng: Engine, root: Path) -> tuple[tuple[str, ...], str]:
    fresh = Engine(eng.data_dir, eng.run_dir)
    fresh.recover()
    assert bootplan.is_current(fresh.store)
    assert not fresh.store.layer_new.exists()
    snap = view(fresh, root)
    return tuple(fresh.roottab()), snap.get("root/notes.txt", "")


def count_calls(action, owner: object, name: str) -> int:  # type: ignore[no-untyped-def]
    calls = {"n": 0}
    mp = pytest.MonkeyPatch()
    real = getattr(owner, name)

    def wrapper(*a, **kw):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(*a, **kw)

    mp.setattr(owner, name, wrapper)
    pid = os.fork()
    if pid == 0:
        try:
            action()
        finally:
            os._exit(min(calls["n"], 200))
    _, status = os.waitpid(pid, 0)
    mp.undo()
    return os.waitstatus_to_exitcode(status)


STEPS = [(store, "atomic_write"), (restore_mod, "durable_rename"), (restore_mod, "remove_tree")]


@pytest.mark.parametrize("what", ["switch", "undo-switch", "undo-restore", "fallback"])
def test_a_crash_at_every_step(two_stacks: Engine, root_ns: Path, what: str) -> None:
    eng = two_stacks
    if what == "undo-switch":
        eng.rollback("new", reason="switch")
    elif what == "undo-restore":
        eng.restore()
    elif what == "fallback":
        eng.trial_tries = 1
        eng.rollback("new", reason="switch")
        eng.trial_tries = None
        count_boot(eng)
    old = state_of(eng, root_ns)
    action = {"switch": lambda: eng.rollback("new", reason="switch"),
              "undo-switch": eng.undo, "undo-restore": eng.undo,
              "fallback": eng.boot_fallback}[what]
    seen = set()
    for owner, name in STEPS:
        n = count_calls(action, owner, name)  # (it ran to the end: back to the start)
        assert state_of(eng, root_ns) == new_state(what)
        undo_to_old(eng, what)
        assert state_of(eng, root_ns) == old
        for i in range(1, n + 1):
            for before in (True, False):
                code = crash_in_child(action, functools.partial(
                    after_nth, owner=owner, name=name, n=i, before=before))
                assert code == CRASH, (name, i, before, code)
                now = state_of(eng, root_ns)
                seen.add(now)
                if now != old:  # put the store back to the start for the next point
                    assert now == new_state(what), (name, i, before, now)
                    undo_to_old(eng, what)
                assert state_of(eng, root_ns) == old
    assert len(seen) == 2, seen  # both outcomes were reached


def new_state(what: str) -> tuple[tuple[str, ...], str]:
    return {"switch": (("new",), ""), "undo-switch": (("base",), "work on base\n"),
            "undo-restore": (("base",), "work on base\n"),
            "fallback": (("base",), "work on base\n")}[what]


def undo_to_old(eng: Engine, what: str) -> None:
    e = Engine(eng.data_dir, eng.run_dir)
    if what == "fallback":  # back on the failed stack, on trial, its boot used up
        e.trial_tries = 1
        e.undo()
        count_boot(e)
    else:
        e.undo()


def test_a_pinned_image_is_shown_and_never_deleted(two_stacks: Engine,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    d = ["--data", str(two_stacks.data_dir), "--run-dir", str(two_stacks.run_dir)]
    two_stacks.store.write_roottab(["base"])  # roottab.prev no longer names new
    assert main(["pin", "new", *d]) == 0
    assert main(["status", *d]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if " new " in ln)
    assert line.rstrip().endswith("pinned")
    assert main(["delete", "new", "--yes", *d]) == 1
    assert "'new' is pinned (ibi unpin new first)" in capsys.readouterr().err
    assert main(["unpin", "new", *d]) == 0
    assert main(["delete", "new", "--yes", *d]) == 0
    assert not two_stacks.store.has_image("new")
