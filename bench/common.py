"""What every benchmark of bench/ shares: timing, cache dropping, the machine's
description, and the JSON each one writes for ``bench/report.py``.

A result file is one JSON object::

    {"bench": "runtime", "command": "sudo python3 bench/runtime_bench.py ...",
     "machine": {...}, "params": {...}, "rows": [ROW, ...]}

and a ROW says what was measured against what, in the same run::

    {"case": "find, warm", "subject": "ibi stack", "value": 0.165, "unit": "s",
     "baseline": "bare squashfs", "baseline_value": 0.153, "ratio": 1.08,
     "target": "<= 1.10x", "met": true, "note": "..."}

``target`` is the issue's figure in words, ``met`` whether this row meets it (None: a row
that has no target, shown for comparison). ``report.py`` turns the files into RESULTS.md.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

# An installed ibi has its modules byte-compiled (dh_python3 runs py3compile): a bench
# that starts Python must not pay for compiling them on every start, as it would where
# the environment forbids writing .pyc files.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def drop_caches() -> None:
    """Write back and drop the page, dentry and inode caches (a cold run)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def lstat_all(root: str | os.PathLike[str]) -> int:
    """An lstat of every entry under ``root`` (os.walk): the "stat every file" workload.
    Returns how many entries there are."""
    n = 0
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            os.lstat(os.path.join(top, name))
            n += 1
    return n


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def plain_python(repo: Path, python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv prefix and environment that start ``python`` (default: this one) as a
    distribution's /usr/bin/python3 starts (ibi's menu at boot): ``-S`` skips this
    environment's ``.pth`` start-up hooks (an editable install's finder, a sandbox's
    certificate hook: tens of ms that a packaged ibi never pays), and PYTHONPATH gives
    the same modules (the repository, then that Python's own site directories)."""
    exe = python or sys.executable
    r = subprocess.run([exe, "-c", "import sys; print('\\n'.join(p for p in sys.path if "
                        "p.endswith(('site-packages', 'dist-packages'))))"],
                       capture_output=True, text=True, check=True)
    path = [str(repo), *r.stdout.split()]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(path)}
    return [exe, "-S"], env


def cpu_seconds() -> float:
    """User + system CPU time of this process and its waited-for children so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), \
        resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def paired(subjects: dict[str, Callable[[], object]], rounds: int, *, warm: bool = True,
           cold: Callable[[], None] | None = None,
           cpu: dict[str, float] | None = None) -> dict[str, float]:
    """Median seconds of each subject, measured in interleaved rounds (A B C, A B C, ...)
    so that a slow moment of the machine falls on all of them alike. ``warm``: one
    untimed run of each first. ``cold``: called before every timed run (drop_caches).
    ``cpu``: filled with the median CPU seconds of each (user + system, children
    included: what a busy machine's waiting does not inflate)."""
    if warm:
        for fn in subjects.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in subjects}
    cpus: dict[str, list[float]] = {k: [] for k in subjects}
    for _ in range(rounds):
        for k, fn in subjects.items():
            if cold:
                cold()
            c = cpu_seconds()
            times[k].append(timed(fn))
            cpus[k].append(cpu_seconds() - c)
    if cpu is not None:
        cpu.update({k: statistics.median(v) for k, v in cpus.items()})
    return {k: statistics.median(v) for k, v in times.items()}


def _version(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "missing"
    out = (r.stdout or r.stderr).strip().splitlines()
    return out[0] if out else "?"


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) >> 10
    except OSError:
        pass
    try:
        import urwid
        urwid_v = urwid.__version__
    except Exception:
        urwid_v = "missing"
    return {"kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "mem_mib": mem, "python": platform.python_version(), "urwid": urwid_v,
            "mksquashfs": _version(["mksquashfs", "-version"]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def row(case: str, subject: str, value: float, *, unit: str = "s",
        baseline: str | None = None, baseline_value: float | None = None,
        target: str | None = None, max_ratio: float | None = None,
        max_value: float | None = None, note: str | None = None) -> dict[str, Any]:
    """One measured figure. ``max_ratio`` / ``max_value``: the target as a bound on the
    ratio to the baseline / on the value itself (``met`` is computed from it)."""
    ratio = (value / baseline_value) if baseline_value else None
    met: bool | None = None
    if max_ratio is not None and ratio is not None:
        met = ratio <= max_ratio
    if max_value is not None:
        met = value <= max_value if met is None else (met and value <= max_value)
    r: dict[str, Any] = {"case": case, "subject": subject, "value": round(value, 4),
                         "unit": unit}
    if baseline is not None:
        r["baseline"] = baseline
        r["baseline_value"] = None if baseline_value is None else round(baseline_value, 4)
        r["ratio"] = None if ratio is None else round(ratio, 3)
    if target is not None:
        r["target"] = target
        r["met"] = met
    if note:
        r["note"] = note
    return r


def write(bench: str, rows: list[dict[str, Any]], params: dict[str, Any],
          out: str | None = None) -> Path:
    """Write the result file (default bench/results/BENCH.json) and say where."""
    path = Path(out) if out else RESULTS / f"{bench}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": bench,
           "command": " ".join(["sudo", "python3"] + [shlex.quote(a) for a in sys.argv]),
           "machine": machine(), "params": params, "rows": rows}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    print(f"results: {path}")
    return path


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a plain-text table (what a bench prints at its end)."""
    lines = []
    for r in rows:
        base = ""
        if r.get("baseline_value") is not None:
            base = f"  vs {r['baseline']} {r['baseline_value']:.4g} -> {r['ratio']:.2f}x"
        tgt = ""
        if "target" in r:
            verdict = {True: "met", False: "NOT met"}.get(r["met"], "-")
            tgt = f"  [{r['target']}: {verdict}]"
        lines.append(f"{r['case']:<34} {r['subject']:<18} {r['value']:.4g} {r['unit']}"
                     f"{base}{tgt}")
    return "\n".join(lines)


def tiny_points(eng: Any, work: Path, count: int) -> None:
    """Stack ``count`` small incremental restore points on ``eng``'s stack (one new file
    each, squashed the way ``ibi create --incremental`` squashes a layer), then write
    roottab and the boot files once: a store with a deep history, made in seconds."""
    from maintenance import squash
    from maintenance.model import Kind

    tab = eng.roottab()
    for _ in range(count):
        i = len(tab) - 1
        layer = work / f"layer{i}"
        (layer / "etc").mkdir(parents=True)
        (layer / "etc" / f"point-{i}").write_text(f"{i}\n")
        tmpf = eng.store.tmp_path(f"p{i}", ".sqfs")
        squash.mksquashfs(layer, tmpf)
        eng._commit_image(tmpf, f"p{i}", Kind.INCREMENTAL, f"point {i}", tuple(tab),
                          tab[-1], "zstd", None)
        tab.append(f"p{i}")
    eng.store.write_roottab(tab)
    eng.refresh_boot_files()

