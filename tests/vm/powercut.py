"""Real power cuts in the guest: the guest side of tests/vm/test_powercut.py, and the rules
that judge what a cut left. This file is copied onto the scratch disk and run there by the
guest's own python3 (``python3 powercut.py setup|launch|check ...``), so it uses the standard
library and, in the guest, the installed engine (``maintenance``) only.

The fault. Each round cuts the power while one action per scratch store is running: the
guest reboots at once through ``echo b > /proc/sysrq-trigger`` (no sync; qemu runs with
``-no-reboot`` so it exits), or the host sends SIGKILL to qemu. Either way everything the
guest kernel still held in its page cache -- data and metadata not yet written to the
virtual disk -- is lost, as in a power cut; what the guest had written to the disk stays.
The disks are raw files opened by qemu with ``cache=unsafe`` (tests/vm/qemu.py): the
guest's flushes are ignored, but every write qemu has issued is in the host's page cache,
which a killed qemu does not lose. So the fault tested is the loss of the *guest's* page
cache: the engine's fsync and directory-fsync ordering against the kernel's writeback and
ext4's journal. (A disk whose own volatile cache drops unflushed writes is not modelled.)
To widen the window, the scratch file system is mounted with ``commit=60``: a change that
nothing fsynced can stay out of the journal for a minute, not ext4's usual 5 s.

The stores. One raw disk (ext4) holds one store per action under ``tpl/<action>``, all
made from the same small tree and history (base, r1, r2; files in the writable layer and in
home/; per action what it needs: a trash entry to purge, an image to delete, five captures
so that a state set also prunes one, unfinished work for recover), all synced, and
``tpl.json``: each store's snapshot and its mounted views before the action. The host keeps
that disk as a template and gives each round a fresh copy, so one cut hits every action at
once, all running in parallel, each started so that it has run its own delay when the
power goes.

After the cut, the next boot (``check``) runs ``ibi recover`` on each store and then
requires: the store is the OLD state or the NEW state of its action (roottab, images,
layer, trash, captures), ``verify --all`` passes, the status is clean, the boot plan is
current, a second recovery finds nothing to do, no ``.tmp-`` remains, ``ibi mount`` of the
stack works and shows every file of the old system with its checksum (for a create, the
layer's files are then in the new image; for Restore System and Roll back they are in the
set-aside layer in trash/), home/ is untouched, and an action that had finished before
the cut is in its NEW state (durable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

IBI = os.environ.get("IBI", "ibi").split()
TEMPLATE = "tpl"
RECORD = "tpl.json"
JSON_MARK = "@@JSON "

# action -> (ibi subcommand, its arguments); each runs on its own store tpl/<action>
ACTIONS: dict[str, tuple[str, list[str]]] = {
    "inc": ("create", ["--incremental", "--name", "new-inc"]),
    "full": ("create", ["--full", "--name", "new-full"]),
    "restore": ("restore", ["--yes"]),
    "rollback": ("rollback", ["--yes", "r1"]),
    "switch": ("switch", ["--yes", "r2"]),
    "undo": ("restore", ["--undo", "--yes"]),
    "delete": ("delete", ["--yes", "r2"]),
    "purge": ("purge", ["--yes"]),
    "state-set": ("state", ["set", "hostname.name=pc-set"]),
    "state-save": ("state", ["save"]),
    "recover": ("recover", []),
}
NEW_NAME = {"inc": "new-inc", "full": "new-full"}
NEW_HOSTNAME = {"state-set": "pc-set", "state-save": "pc-saved"}
# a finished action must be durable: every one (purge and recover fsync the directories
# they deleted from, so that what they report holds after a cut)
NOT_DURABLE: set[str] = set()
BASE_HOST = "pc-base"


def run_dir(store: Path) -> Path:
    return Path("/run/ibi-powercut") / f"{store.parent.name}-{store.name}"


def ibi_argv(action: str, store: Path) -> list[str]:
    sub, rest = ACTIONS[action]
    return [*IBI, sub, "--data", str(store), "--run-dir", str(run_dir(store)), "-q", *rest]


def ibi(store: Path, sub: str, *args: str) -> str:
    r = subprocess.run([*IBI, sub, "--data", str(store), "--run-dir", str(run_dir(store)),
                        "-q", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"ibi {sub} {' '.join(args)} on {store} exited {r.returncode}: "
                           f"{r.stderr.strip()}")
    return r.stdout


# --- making the stores (guest) -----------------------------------------------------------

def rand(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


def build_tree(src: Path, rng: random.Random) -> None:
    """The base system: a few MiB that do not compress, and small files."""
    for d in ("etc", "home", "srv", "usr/share/pc", "var/lib/pc"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / "etc/hostname").write_text(BASE_HOST + "\n")
    (src / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {BASE_HOST}\n")
    (src / "etc/pc.conf").write_text("level = base\n")
    for i in range(4):
        (src / f"usr/share/pc/blob-{i}").write_bytes(rand(rng, 1 << 20))
    for i in range(40):
        (src / f"usr/share/pc/small-{i}").write_text(f"small file {i}\n" * (i + 1))
    os.symlink("blob-0", src / "usr/share/pc/link")


def write_layer(store: Path, tag: str, rng: random.Random, size: int = 128 << 10,
                files: int = 4) -> None:
    """Files in the writable layer, written into its upper directory as an overlay
    would (a changed file is copied up whole; a deletion is a 0/0 character device)."""
    up = store / "layer/upper"
    d = up / "srv" / f"pc-{tag}"
    (d / "sub/deeper").mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (d / f"f{i}").write_bytes(rand(rng, size))
    for i in range(8):
        (d / "sub" / f"s{i}").write_text(f"{tag} small {i}\n")
    (d / "sub/deeper/last").write_text(f"{tag} deep\n")
    (up / "etc").mkdir(exist_ok=True)
    (up / "etc/pc.conf").write_text(f"level = {tag}\n")
    gone = up / "usr/share/pc" / f"small-{len(tag) * 3 + rng.randrange(3)}"
    gone.parent.mkdir(parents=True, exist_ok=True)
    if not gone.exists():
        os.mknod(gone, stat.S_IFCHR | 0o600, os.makedev(0, 0))


def write_home(store: Path, rng: random.Random) -> None:
    h = store / "home/alice"
    h.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (h / f"h{i}").write_bytes(rand(rng, 64 << 10))
    (h / "notes.txt").write_text("alice's notes\n")


def sync() -> None:
    subprocess.run(["sync"], check=True)


def setup(root: Path) -> dict[str, Any]:
    """Make tpl/<action> for every action and record them in tpl.json (all synced)."""
    rng = random.Random(20261202)
    src, common, tpl = root / "src", root / "common", root / TEMPLATE
    for p in (src, common, tpl):
        shutil.rmtree(p, ignore_errors=True)
    build_tree(src, rng)
    common.mkdir()
    ibi(common, "init", "--from", str(src))
    for tag in ("r1", "r2"):
        write_layer(common, tag, rng)
        ibi(common, "create", "--incremental", "--name", tag)
    tpl.mkdir()
    for action in ACTIONS:
        store = tpl / action
        subprocess.run(["cp", "-a", str(common), str(store)], check=True)
        if action == "delete":  # r2 outside roottab and roottab.prev: deletable
            ibi(store, "rollback", "--yes", "r1")
            write_layer(store, "r3", rng)
            ibi(store, "create", "--incremental", "--name", "r3")
        elif action == "switch":  # r2 outside roottab: switched to, on trial
            ibi(store, "rollback", "--yes", "r1")
        elif action == "undo":  # a layer Restore System set aside: put back
            write_layer(store, "U", rng, size=64 << 10, files=24)
            ibi(store, "restore", "--yes")
        elif action == "purge":  # a set-aside layer in trash/
            write_layer(store, "trashed", rng, size=64 << 10, files=24)
            ibi(store, "restore", "--yes")
        elif action == "state-set":  # five captures: the next one prunes the oldest
            for i in range(4):
                ibi(store, "state", "set", f"hostname.name=pc-{i}")
        write_layer(store, "L", rng)
        write_home(store, rng)
        if action == "state-save":  # a new hostname in the layer: the save captures it
            up = store / "layer/upper/etc"
            (up / "hostname").write_text("pc-saved\n")
            (up / "hosts").write_text("127.0.0.1 localhost\n127.0.1.1 pc-saved\n")
    shutil.rmtree(common)
    sync()
    record: dict[str, Any] = {}
    for action in ACTIONS:
        record[action] = before(action, tpl / action)
    # unfinished work for recover (after its views: a mount recovers first)
    store = tpl / "recover"
    (store / ".root_images/.tmp-junk.sqfs").write_bytes(rand(rng, 2 << 20))
    junk = store / "state/.tmp-000099-junk"
    junk.mkdir(parents=True)
    (junk / "capture.yaml").write_text("format: 1\n")
    for d in ("upper/srv", "work"):
        (store / "layer.new" / d).mkdir(parents=True)
    (store / "layer.new/id").write_text("0123456789abcdef\n")
    (store / "layer.new/upper/srv/half").write_bytes(rand(rng, 256 << 10))
    record["recover"]["snap"] = snapshot(store)
    (root / RECORD).write_text(json.dumps(record))
    sync()
    return record


# --- reading a store (guest) -------------------------------------------------------------

def sig(p: Path) -> str:
    st = p.lstat()
    mode = f"{stat.S_IMODE(st.st_mode):o}"
    if stat.S_ISLNK(st.st_mode):
        return f"l:{os.readlink(p)}"
    if stat.S_ISDIR(st.st_mode):
        return f"d:{mode}"
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "whiteout"
    if stat.S_ISREG(st.st_mode):
        h = hashlib.sha256()
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"{h.hexdigest()[:16]}:{mode}"
    return f"other:{st.st_mode:o}"


def files(top: Path) -> dict[str, str]:
    """Every entry under ``top`` (not ``top`` itself), by relative path."""
    out: dict[str, str] = {}
    if not top.is_dir():
        return out
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(top))] = sig(p)
    return out


def only_files(tree: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in tree.items() if not v.startswith("d:")}


def read_tab(p: Path) -> list[str] | None:
    try:
        lines = p.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


def tmp_names(store: Path) -> list[str]:
    out = []
    for d in (store / ".root_images", store / "state", store / "boot/kernels"):
        if d.is_dir():
            out += [f"{d.name}/{p.name}" for p in d.iterdir() if p.name.startswith(".tmp-")]
    return sorted(out)


def snapshot(store: Path) -> dict[str, Any]:
    ri = store / ".root_images"
    names = sorted(p.name for p in ri.iterdir()) if ri.is_dir() else []
    trash = store / "trash"
    caps = store / "state/captures"
    try:
        lid = (store / "layer/id").read_text().strip() or None
    except OSError:
        lid = None
    return {
        "roottab": read_tab(ri / "roottab"),
        "prev": read_tab(ri / "roottab.prev"),
        "sqfs": [n[:-5] for n in names if n.endswith(".sqfs") and not n.startswith(".")],
        "yaml": [n[:-5] for n in names if n.endswith(".yaml") and not n.startswith(".")],
        "layer_id": lid,
        "layer": only_files(files(store / "layer/upper")),
        "layer_new": (store / "layer.new").exists(),
        "home": files(store / "home"),
        # a layer a restore point cleared ("-squashed") is not kept: ibi reclaim deletes it
        # whenever it runs (after a create, at boot), so it is no part of either state
        "trash": {e.name: only_files(files(e / "upper"))
                  for e in sorted(trash.iterdir()) if not e.name.endswith("-squashed")}
        if trash.is_dir() else {},
        "captures": sorted(p.name for p in caps.iterdir()) if caps.is_dir() else [],
        "tmp": tmp_names(store),
    }


def engine(store: Path) -> Any:
    from maintenance.engine import Engine

    rd = run_dir(store)
    rd.mkdir(parents=True, exist_ok=True)
    return Engine(store, rd)


def view(store: Path, how: str = "mount", name: str = "") -> dict[str, str] | str:
    """The assembled system (ibi mount, --read-only, or a Live Review of ``name``) as
    {path: signature}; an error message if it cannot be assembled."""
    eng = engine(store)
    target = Path("/run/ibi-powercut/mnt") / f"{store.parent.name}-{store.name}"
    target.mkdir(parents=True, exist_ok=True)
    try:
        if how == "review":
            eng.review(name, target)
        else:
            eng.mount(target, readonly=(how == "ro"))
    except Exception as e:
        return f"{how} failed: {type(e).__name__}: {e}"
    try:
        return files(target)
    finally:
        eng.umount(target)


def hostname(store: Path) -> str | None:
    for v in engine(store).state_values():
        if v.key == "hostname.name":
            return v.value  # type: ignore[no-any-return]
    return None


def before(action: str, store: Path) -> dict[str, Any]:
    rec: dict[str, Any] = {"snap": snapshot(store), "view": view(store),
                           "hostname": hostname(store)}
    if action == "restore":
        rec["expect_new_view"] = view(store, "ro")
    elif action == "rollback":
        rec["expect_new_view"] = view(store, "review", "r1")
    elif action == "switch":
        rec["expect_new_view"] = view(store, "review", "r2")
    return rec


# --- judging (guest; pure) ---------------------------------------------------------------

def diff(what: str, old: dict[str, str], new: dict[str, str], limit: int = 4) -> list[str]:
    """What of ``old`` is missing or different in ``new`` (and what ``new`` adds)."""
    out = []
    for k in sorted(old):
        if k not in new:
            out.append(f"{what}: {k} lost")
        elif new[k] != old[k]:
            out.append(f"{what}: {k} changed ({old[k]} -> {new[k]})")
    out += [f"{what}: {k} appeared" for k in sorted(set(new) - set(old))]
    return out[:limit] + ([f"{what}: ... {len(out) - limit} more"] if len(out) > limit else [])


def classify(action: str, rec: dict[str, Any], raw: dict[str, Any], snap: dict[str, Any],
             now_view: dict[str, str] | str, host: str | None) -> tuple[str, list[str]]:
    """OLD or NEW (or, for purge and recover, a partial deletion) and the violations."""
    old = rec["snap"]
    bad: list[str] = []
    if snap["home"] != old["home"]:
        bad += diff("home", old["home"], snap["home"])
    if snap["tmp"]:
        bad.append(f"left after recovery: {snap['tmp']}")
    if snap["layer_new"]:
        bad.append("layer.new left after recovery")
    if isinstance(now_view, str):
        bad.append(now_view)
    same_layer = snap["layer_id"] == old["layer_id"] and snap["layer"] == old["layer"]

    def unchanged(*keys: str) -> None:
        for k in keys:
            if snap[k] != old[k]:
                bad.append(f"{k} changed: {old[k]} -> {snap[k]}")
        if not isinstance(now_view, str) and now_view != rec["view"]:
            bad.extend(diff("system", rec["view"], now_view))

    def set_aside(trash: dict[str, dict[str, str]]) -> None:
        """The old layer's files wait in a new trash entry, whole."""
        added = {k: v for k, v in trash.items() if k not in old["trash"]}
        if len(added) != 1:
            bad.append(f"expected one new trash entry, found {sorted(added)}")
            return
        (entry, kept), = added.items()
        if kept != old["layer"]:
            bad.extend(diff(f"trash/{entry}", old["layer"], kept))
        for k, v in old["trash"].items():
            if trash.get(k) != v:
                bad.append(f"older trash entry {k} changed")

    outcome = "?"
    if action in NEW_NAME:
        n = NEW_NAME[action]
        want = [*old["roottab"], n] if action == "inc" else [n]
        if snap["roottab"] == old["roottab"]:
            outcome = "old"
            if not same_layer:
                bad.extend(diff("layer", old["layer"], snap["layer"]) or ["layer id changed"])
            if n in snap["sqfs"] or n in snap["yaml"]:
                bad.append(f"{n} left in the store while roottab is the old one")
        elif snap["roottab"] == want:
            outcome = "new"
            if n not in snap["sqfs"] or n not in snap["yaml"]:
                bad.append(f"roottab names {n} but its image or metadata is missing")
            if snap["layer"]:
                bad.append(f"the layer was not cleared: {sorted(snap['layer'])[:4]}")
            if snap["layer_id"] == old["layer_id"]:
                bad.append("the layer keeps its old id after the create")
        else:
            bad.append(f"roottab is neither old nor new: {snap['roottab']}")
        # either way every file of the old system is there, with its checksum: in the layer
        # (old) or in the new image (new)
        unchanged("trash")
    elif action in ("restore", "rollback", "switch"):
        want = {"restore": old["roottab"], "rollback": ["base", "r1"],
                "switch": ["base", "r1", "r2"]}[action]
        if snap["layer_id"] == old["layer_id"] and snap["roottab"] == old["roottab"]:
            outcome = "old"
            if snap["layer"] != old["layer"]:
                bad.extend(diff("layer", old["layer"], snap["layer"]))
            unchanged("trash")
        elif snap["layer_id"] != old["layer_id"] and snap["roottab"] == want:
            outcome = "new"
            kept = set(snap["layer"]) - {"etc/hostname", "etc/hosts"}  # rendered state
            if kept:
                bad.append(f"files of the old layer in the fresh one: {sorted(kept)[:4]}")
            set_aside(snap["trash"])
            if not isinstance(now_view, str) and now_view != rec["expect_new_view"]:
                bad.extend(diff("system", rec["expect_new_view"], now_view))
        else:
            bad.append(f"neither old nor new: roottab {snap['roottab']}, layer id "
                       f"{old['layer_id']} -> {snap['layer_id']}")
    elif action == "undo":  # the set-aside layer back whole, the replaced one set aside whole
        (entry, back), = old["trash"].items()
        if snap["layer_id"] == old["layer_id"] and snap["trash"] == old["trash"]:
            outcome = "old"
            unchanged("roottab", "layer")
        elif snap["layer"] == back and entry not in snap["trash"]:
            outcome = "new"
            added = [v for k, v in snap["trash"].items() if k not in old["trash"]]
            if len(added) != 1 or added[0] != old["layer"]:
                bad.append(f"the replaced layer is not set aside whole: {len(added)} new "
                           "trash entries")
            if snap["roottab"] != old["roottab"]:
                bad.append(f"roottab changed: {old['roottab']} -> {snap['roottab']}")
        else:
            bad.append(f"neither old nor new: layer id {old['layer_id']} -> "
                       f"{snap['layer_id']}, trash {sorted(snap['trash'])}")
    elif action == "delete":
        present = ("r2" in snap["sqfs"], "r2" in snap["yaml"])
        outcome = {(True, True): "old", (False, False): "new"}.get(present, "?")
        if outcome == "?":
            bad.append(f"r2 half deleted (image, metadata present: {present})")
        unchanged("roottab", "layer_id", "layer", "trash")
    elif action == "purge":
        if snap["trash"] == old["trash"]:
            outcome = "old"
        elif not snap["trash"]:
            outcome = "new"
        else:
            outcome = "partial"
            for k, tree in snap["trash"].items():
                if k not in old["trash"] or any(old["trash"][k].get(p) != s
                                                for p, s in tree.items()):
                    bad.append(f"trash entry {k} is not a part of what was there")
        unchanged("roottab", "layer_id", "layer")
    elif action in NEW_HOSTNAME:
        added = sorted(set(snap["captures"]) - set(old["captures"]))
        removed = sorted(set(old["captures"]) - set(snap["captures"]))
        if not added and not removed and host == rec["hostname"]:
            outcome = "old"
        elif len(added) == 1 and host == NEW_HOSTNAME[action]:
            outcome = "new"
            if removed and removed != sorted(old["captures"])[:len(removed)]:
                bad.append(f"captures other than the oldest removed: {removed}")
            if len(removed) > max(0, len(old["captures"]) + 1 - 5):  # keep: 5 (default)
                bad.append(f"too many captures removed: {removed}")
        else:
            bad.append(f"captures neither old nor new: added {added}, removed {removed}, "
                       f"hostname {host!r}")
        unchanged("roottab", "layer_id", "layer", "trash")
    elif action == "recover":
        junk = set(old["tmp"])
        left = set(raw["tmp"]) & junk
        if left == junk and raw["layer_new"]:
            outcome = "old"
        elif not left and not raw["layer_new"]:
            outcome = "new"
        else:
            outcome = "partial"
        unchanged("roottab", "layer_id", "layer", "trash")
    return outcome, bad


def check(root: Path, done: set[str], set_name: str = TEMPLATE) -> dict[str, Any]:
    """After a cut: recover every store (ibi recover, all at once) and judge it."""
    record = json.loads((root / RECORD).read_text())
    stores = {a: root / set_name / a for a in ACTIONS}
    raws = {a: snapshot(s) for a, s in stores.items()}
    recovered: dict[str, tuple[int, str]] = {}

    def recover(a: str) -> None:
        r = subprocess.run([*IBI, "recover", "--data", str(stores[a]), "--run-dir",
                            str(run_dir(stores[a])), "--json"], capture_output=True,
                           text=True, stdin=subprocess.DEVNULL)
        said = r.stderr.strip()
        if r.returncode == 0:
            try:
                said = "; ".join(json.loads(r.stdout).get("done", []))
            except ValueError:
                said = r.stdout.strip()
        recovered[a] = (r.returncode, said)

    threads = [threading.Thread(target=recover, args=(a,)) for a in ACTIONS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    from maintenance import bootplan
    from maintenance.wording import notice_text

    out: dict[str, Any] = {}
    for a, store in stores.items():
        rc, said = recovered[a]
        bad = [] if rc == 0 else [f"ibi recover exited {rc}: {said[-300:]}"]
        snap = snapshot(store)
        eng = engine(store)
        try:
            again = eng.recover()
            if again:
                bad.append(f"a second recovery still did: {again}")
            if not eng.verify(all_images=True).ok:
                bad.append("ibi verify --all failed")
            st = eng.status()
            if not st.ok:
                bad.append(f"status not ok: {[notice_text(n) for n in st.notices][:3]}")
            if not bootplan.is_current(eng.store):
                bad.append("the boot plan is not current")
            host = hostname(store)
        except Exception as e:
            bad.append(f"{type(e).__name__}: {e}")
            host = None
        outcome, more = classify(a, record[a], raws[a], snap, view(store), host)
        bad += more
        if a in done and a not in NOT_DURABLE and outcome != "new":
            bad.append(f"finished before the cut, but found {outcome}: not durable")
        out[a] = {"outcome": outcome, "violations": bad,
                  "recovered": said[-300:] if rc == 0 else ""}
    return out


# --- running the actions, then the cut (guest) ---------------------------------------------

def launch(root: Path, plan: dict[str, float], cut: float | None, mode: str,
           set_name: str = TEMPLATE) -> None:
    """Start each action at its offset (seconds); at ``cut``: sysrq b (mode sysrq), or
    print @@CUT and wait for the host to kill qemu (mode kill). Without ``cut``: wait for
    all and print their durations. Prints ``@@DONE action rc seconds`` as each ends."""
    if cut is not None and mode == "sysrq":
        Path("/proc/sys/kernel/sysrq").write_text("1\n")
    lock = threading.Lock()
    took: dict[str, tuple[int, float, str]] = {}

    def one(a: str, start: float) -> None:
        time.sleep(max(0.0, start - (time.monotonic() - t0)))
        t = time.monotonic()
        r = subprocess.run(ibi_argv(a, root / set_name / a), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL)
        secs = time.monotonic() - t
        err = " ".join(r.stderr.split())[-200:]
        took[a] = (r.returncode, secs, err)
        with lock:
            print(f"@@DONE {a} {r.returncode} {secs:.2f} {err}", flush=True)

    t0 = time.monotonic()
    print("@@GO", flush=True)
    threads = [threading.Thread(target=one, args=(a, s), daemon=True) for a, s in plan.items()]
    for t in threads:
        t.start()
    if cut is None:
        for t in threads:
            t.join()
        print(JSON_MARK + json.dumps(took), flush=True)
        return
    time.sleep(max(0.0, cut - (time.monotonic() - t0)))
    if mode == "sysrq":
        Path("/proc/sysrq-trigger").write_text("b")
    with lock:
        print("@@CUT", flush=True)
        time.sleep(3600)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("root", type=Path)
    c = sub.add_parser("check")
    c.add_argument("root", type=Path)
    c.add_argument("--done", default="", help="actions that finished before the cut")
    c.add_argument("--set", default=TEMPLATE, help="the stores' directory under ROOT")
    ln = sub.add_parser("launch")
    ln.add_argument("root", type=Path)
    ln.add_argument("--plan", required=True, help="action=start,... (seconds)")
    ln.add_argument("--cut", type=float, default=None)
    ln.add_argument("--mode", choices=("sysrq", "kill"), default="sysrq")
    ln.add_argument("--set", default=TEMPLATE, help="the stores' directory under ROOT")
    args = p.parse_args(argv)
    if args.cmd == "setup":
        setup(args.root)
        print(JSON_MARK + json.dumps({"ok": True}), flush=True)
    elif args.cmd == "check":
        done = {a for a in args.done.split(",") if a}
        print(JSON_MARK + json.dumps(check(args.root, done, args.set)), flush=True)
    else:
        plan = {a: float(s) for a, _, s in (x.partition("=") for x in args.plan.split(","))}
        launch(args.root, plan, args.cut, args.mode, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
