"""Power cuts for real: every store action is cut mid-way by a reboot without sync or a
SIGKILL of qemu, and the next boot must find each store in its old state or its new one,
with nothing lost (the fault model and the rules: tests/vm/powercut.py).

The installed guest (tests/vm/installed.py) boots through its GRUB, each time on a fresh
overlay of the cached disk (a killed qemu may leave a qcow2 half written). Its own store
is live, so the stores under test are on a second disk: a raw ext4 image holding one
store per action, made once in the guest (``powercut.py setup``) and cached in the VM cache
with the actions' durations, measured there running all at once (the calibration, whose
stores the checker must then find all NEW: its own test). Each round takes a fresh copy of
that disk, starts the nine actions in parallel, each delayed so that it has run a random
time (seeded; 40-110 % of its calibrated duration) when the power is cut, then cuts it.
The next boot checks that copy (``powercut.py check``) and cuts the next round's; a round
costs one boot.

    sudo IBI_VM_CACHE=/var/cache/ibi-vm python3 -m pytest tests/vm/test_powercut.py -s
    IBI_POWERCUT_ROUNDS=200 scripts/test -m powercut       # the long run

``IBI_POWERCUT_ROUNDS`` rounds (default 1: one cut per action, two boots);
``IBI_POWERCUT_SEED`` (default: the clock) seeds the delays and the way each cut is made; a
failure names round, seed, action and delay. A summary (cuts, failures, each action's
old/new outcomes) is printed and kept in the logs directory as ``powercut-summary.txt``.
"""

from __future__ import annotations

import collections
import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import guest as guestmod
import pexpect
import powercut
import pytest
from qemu import VM

pytestmark = [pytest.mark.vm, pytest.mark.powercut]

ROUNDS = int(os.environ.get("IBI_POWERCUT_ROUNDS", "1"))
SMP = 2  # the actions run in parallel
MEMORY = "1536"
DISK_SIZE = "1G"
GUEST_SCRIPT = "/mnt/pc/powercut.py"
# a cut lands between 40 % and 110 % of the action's calibrated duration: with nine
# actions starting on two CPUs, the first half or so is Python starting; past 100 % the
# action may have finished, which must then be durable
SPREAD = (0.40, 1.10)


def guest_json(out: str) -> Any:
    for line in reversed(out.splitlines()):
        if line.startswith(powercut.JSON_MARK):
            return json.loads(line[len(powercut.JSON_MARK):])
    raise AssertionError(f"no result from the guest:\n{out[-2000:]}")


def root_overlay(installed: Path, path: Path) -> Path:
    path.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(installed), str(path)], check=True)
    return path


def boot(installed: Path, work: Path, logs: Path, name: str, drives: list[Path]) -> VM:
    vm = VM(None, None, root_overlay(installed, work / f"{name}.qcow2"), logs, name,
            smp=SMP, memory=MEMORY, drives=drives)
    vm.boot()
    return vm


def finish(vm: VM) -> None:
    vm._kill()
    vm.disk.unlink(missing_ok=True)


def build_template(installed: Path, out: Path, logs: Path) -> dict[str, Any]:
    """The stores, made in the guest, and the calibration of the actions' durations."""
    work = out.with_name(out.name + ".work")
    stage = out.with_name(out.name + ".d")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    shutil.copy2(powercut.__file__, stage / "powercut.py")
    work.unlink(missing_ok=True)
    guestmod.sh(["mkfs.ext4", "-q", "-F", "-L", "ibipc", "-d", str(stage), str(work),
                 DISK_SIZE])
    shutil.rmtree(stage)
    vm = boot(installed, out.parent, logs, "powercut-template", [work])
    try:
        vm.check("mkdir -p /mnt/pc && mount /dev/vdb /mnt/pc")
        t = time.monotonic()
        guest_json(vm.check(f"python3 {GUEST_SCRIPT} setup /mnt/pc 2>&1", timeout=1200))
        setup_s = round(time.monotonic() - t, 1)
        vm.check("cp -a /mnt/pc/tpl /mnt/pc/cal && sync", timeout=300)
        plan = ",".join(f"{a}=0" for a in powercut.ACTIONS)
        ran = guest_json(vm.check(f"python3 {GUEST_SCRIPT} launch /mnt/pc --set cal "
                                  f"--plan {plan}", timeout=1200))
        failed = {a: r for a, r in ran.items() if r[0] != 0}
        assert not failed, f"actions failed in the calibration run: {failed}"
        # the checker's own test: each finished action must be found NEW, without fault
        verdict = guest_json(vm.check(f"python3 {GUEST_SCRIPT} check /mnt/pc --set cal "
                                      f"--done {','.join(powercut.ACTIONS)}", timeout=1200))
        wrong = {a: v for a, v in verdict.items() if v["outcome"] != "new" or v["violations"]}
        assert not wrong, f"the checker does not accept finished actions: {wrong}"
        vm.check("rm -rf /mnt/pc/cal && umount /mnt/pc", timeout=300)
    finally:
        finish(vm)
    os.replace(work, out)
    return {"durations": {a: round(r[1], 2) for a, r in ran.items()}, "setup_s": setup_s,
            "boot_s": vm.boot_seconds}


def pinned(installed: Path, work: Path) -> Path:
    """The installed disk under a name of this run's own (a hard link where it can be): the
    cache replaces it when another run changed the package, which must not pull the
    backing file from under this test's overlays."""
    out = work / "powercut-installed.qcow2"
    out.unlink(missing_ok=True)
    try:
        os.link(installed, out)
    except OSError:
        shutil.copy2(installed, out)
    return out


def template_disk(installed: Path, logs: Path) -> tuple[Path, dict[str, Any]]:
    """The cached template disk (built if missing) and its record (calibrated durations),
    keyed by powercut.py alone: its stores are plain stores of the on-disk format (made
    by the ibi of the installed disk that built them), and the installed disk is rebuilt
    whenever the package's sources change."""
    c = guestmod.cache_dir()
    key = guestmod.hash_paths([Path(powercut.__file__)])
    out = c / f"powercut-{key}.raw"
    info = out.with_suffix(".json")
    with guestmod.locked(c / "powercut.lock"):
        if not (out.is_file() and info.is_file()):
            guestmod.log("making the power-cut stores in the guest, and calibrating")
            record = build_template(installed, out, logs)
            info.write_text(json.dumps(record, indent=1))
            for old in [*c.glob("powercut-*.raw"), *c.glob("powercut-*.json")]:
                if old.name not in (out.name, info.name):
                    old.unlink()
    return out, json.loads(info.read_text())


def plan_round(seed: str, durations: dict[str, float]) -> dict[str, Any]:
    rng = random.Random(seed)
    delays = {a: round(rng.uniform(*SPREAD) * durations[a], 2) for a in powercut.ACTIONS}
    cut = round(max(delays.values()) + 0.05, 2)
    return {"seed": seed, "delays": delays, "cut": cut,
            "starts": {a: round(cut - d, 2) for a, d in delays.items()},
            "mode": rng.choice(("sysrq", "kill"))}


def cut_round(vm: VM, plan: dict[str, Any]) -> dict[str, tuple[int, str]]:
    """Start the actions, cut the power; returns the actions that ended before the cut."""
    assert vm.proc is not None
    starts = ",".join(f"{a}={s}" for a, s in plan["starts"].items())
    vm.proc.sendline(f"python3 {GUEST_SCRIPT} launch /mnt/pc --plan {starts} "
                     f"--cut {plan['cut']} --mode {plan['mode']}")
    vm.expect("@@GO", timeout=300)
    wait = plan["cut"] + 300
    if plan["mode"] == "kill":
        vm.expect("@@CUT", timeout=wait)
        os.kill(vm.proc.pid, signal.SIGKILL)
    else:
        vm.proc.expect(pexpect.EOF, timeout=wait)
    seen = (vm.proc.before or "").replace("\r", "")
    done = {}
    for line in seen.splitlines():
        if line.startswith("@@DONE "):
            a, rc, _secs, *err = [*line.split(" ", 4)[1:], ""]
            done[a] = (int(rc), " ".join(err).strip())
    vm._kill()
    return done


def test_power_cuts(installed: tuple[Path, dict[str, object]], vm_workdir: Path,
                    request: pytest.FixtureRequest) -> None:
    t0 = time.monotonic()
    logs = Path(os.environ.get("IBI_VM_LOGS", vm_workdir / "logs"))
    base_seed = os.environ.get("IBI_POWERCUT_SEED", str(int(time.time())))
    disk0 = pinned(installed[0], vm_workdir)
    request.addfinalizer(lambda: disk0.unlink(missing_ok=True))
    template, record = template_disk(disk0, logs)
    durations = record["durations"]
    print(f"\n[powercut] template {template}: {record}; seed {base_seed}, {ROUNDS} rounds",
          flush=True)
    outcomes: dict[str, collections.Counter[str]] = {a: collections.Counter()
                                                     for a in powercut.ACTIONS}
    failures: list[str] = []
    cuts = 0
    pending: tuple[Path, dict[str, Any], dict[str, tuple[int, str]]] | None = None
    for k in range(1, ROUNDS + 2):
        drives = []
        disk = vm_workdir / f"powercut-round{k}.raw"
        if k <= ROUNDS:
            subprocess.run(["cp", "--sparse=always", str(template), str(disk)], check=True)
            drives.append(disk)  # /dev/vdb: this round's stores
        if pending is not None:
            drives.append(pending[0])  # /dev/vdb or vdc: the last round's, after the cut
        vm = boot(disk0, vm_workdir, logs, f"powercut-{k}", drives)
        try:
            if pending is not None:
                cut_disk, plan, done = pending
                dev = "/dev/vdc" if k <= ROUNDS else "/dev/vdb"
                vm.check(f"mkdir -p /mnt/cut && mount {dev} /mnt/cut")
                t = time.monotonic()
                finished = [a for a, (rc, _) in done.items() if rc == 0]
                verdict = guest_json(vm.check(
                    f"python3 /mnt/cut/powercut.py check /mnt/cut --done "
                    f"{','.join(finished) or ','}", timeout=1200))
                vm.check("umount /mnt/cut", timeout=300)
                print(f"[powercut] boot {k}: {vm.boot_seconds} s, the check of round {k - 1}: "
                      f"{time.monotonic() - t:.0f} s", flush=True)
                where = (f"round {k - 1} (IBI_POWERCUT_SEED={base_seed}, seed "
                         f"{plan['seed']}, {plan['mode']} at {plan['cut']} s)")
                for a, v in verdict.items():
                    outcomes[a][v["outcome"]] += 1
                    rc, err = done.get(a, (0, ""))
                    problems = list(v["violations"])
                    if rc != 0:
                        problems.append(f"the action itself failed (exit {rc}): {err}")
                    for p in problems:
                        failures.append(f"{where}: {a} cut after {plan['delays'][a]} s "
                                        f"(of ~{durations[a]} s): {p}")
                    status = "finished" if a in finished else "cut"
                    fail = "FAIL " + "; ".join(problems) if problems else ""
                    print(f"[powercut] {where}: {a:<10} {status:<8} after "
                          f"{plan['delays'][a]:>5} s -> {v['outcome']:<7} "
                          f"{v['recovered'] or ''} {fail}", flush=True)
                cut_disk.unlink()
                pending = None
            if k <= ROUNDS:
                plan = plan_round(f"{base_seed}-{k}", durations)
                vm.check("mkdir -p /mnt/pc && mount -o commit=60 /dev/vdb /mnt/pc")
                done = cut_round(vm, plan)
                cuts += len(powercut.ACTIONS)
                pending = (disk, plan, done)
        finally:
            finish(vm)
    wall = round(time.monotonic() - t0)
    lines = [f"power cuts: {ROUNDS} rounds x {len(powercut.ACTIONS)} actions = {cuts} cut "
             f"actions, {len(failures)} failures, {wall} s (seed {base_seed})",
             "outcomes after recovery (old / new / partial):"]
    for a, c in outcomes.items():
        lines.append(f"  {a:<10} old {c['old']:>3}  new {c['new']:>3}  partial "
                     f"{c['partial']:>3}" + (f"  other {c['?']}" if c["?"] else ""))
    lines += failures
    (logs / "powercut-summary.txt").write_text("\n".join(lines) + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    for line in lines:
        if reporter is not None:
            reporter.write_line(f"[powercut] {line}")
        else:
            print(f"[powercut] {line}")
    assert not failures, "\n".join(failures)
