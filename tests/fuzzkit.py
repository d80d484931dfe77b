"""The fuzz tests' machinery (for tests/test_fuzz.py and tests/test_fuzz_boot.py; not
collected itself): the hypothesis settings, the ``target`` decorator and the module fixture
that prints the executions per target, a store with every file valid (the seeds the
strategies damage, and where each file lives), the ``template`` and ``store`` fixtures, and
the driver that runs the boot plan's shell functions (ibi-lib.sh sourced by dash). The
strategies and the checks are in tests/fuzzchecks.py. A test module binds the fixtures it
uses, and ``_executions``, to names of its own, where pytest finds them.

IBI_FUZZ_EXAMPLES sets the examples per target (default: a short run for CI); the number
of executions per target is printed at the end of each test module. IBI_FUZZ_COLLECT=1
records each kind of failure with its shortest input and goes on (long runs); the kinds are
listed after the executions.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import os
import shutil
import subprocess
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, settings

from maintenance import bootplan
from maintenance import state as statemod
from maintenance.model import ImageMeta, KernelRef, Kind
from maintenance.operators import available
from maintenance.records import kernel_to_doc, meta_to_yaml, render_roottab
from maintenance.store import Store

EXAMPLES = int(os.environ.get("IBI_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, print_blob=True,
                phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])
HANG_SECONDS = 30  # one read of one file: far longer means a loop, not a slow parser
LIB = Path(__file__).resolve().parent.parent / "dracut-module/90ibi/ibi-lib.sh"
SH = shutil.which("dash") or shutil.which("sh") or "sh"
COUNTS: collections.Counter[str] = collections.Counter()
OPS = available()  # the registry operators (looked up once: entry points are slow to list)


COLLECT = os.environ.get("IBI_FUZZ_COLLECT") == "1"  # record failures, go on (long runs)
FAILURES: dict[tuple[str, str, str], tuple[int, str, str]] = {}  # -> (count, input, message)
DRAWN: dict[str, object] = {}  # what a test drew with st.data(), for the record


def target(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Count the executions of a fuzz target; under IBI_FUZZ_COLLECT=1 record each kind of
    failure (exception type and the line that raised it) with its shortest input, and go
    on, so that a long run finds every kind, not only the first."""
    def deco(fn: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            COUNTS[name] += 1
            DRAWN.clear()
            if not COLLECT:
                return fn(*args, **kwargs)
            try:
                fn(*args, **kwargs)
            except Exception as e:
                tb = [f for f in traceback.extract_tb(e.__traceback__)
                      if "/site-packages/" not in f.filename and "/lib/python" not in f.filename]
                where = f"{os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else "?"
                shown = {k: v for k, v in kwargs.items()
                         if k not in ("store", "template", "tmp_path_factory", "data")}
                shown.update(DRAWN)
                text = repr(shown)
                key = (name, type(e).__name__, where)
                count, best, msg = FAILURES.get(key, (0, text, str(e)))
                if len(text) <= len(best):
                    best, msg = text, str(e)
                FAILURES[key] = (count + 1, best, msg)
            return None
        return run
    return deco


@pytest.fixture(scope="module", autouse=True)
def _executions(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the executions per target when the module is done (with or without -s): the
    module's own (the counts are shared by the modules that import this fixture)."""
    COUNTS.clear()
    FAILURES.clear()
    yield
    lines = [f"  {target}: {n}" for target, n in sorted(COUNTS.items())]
    for (tgt, exc, where), (n, best, msg) in sorted(FAILURES.items()):
        lines.append(f"  FAILED {tgt}: {exc} at {where}, {n} times; shortest input: "
                     f"{best[:600]}\n      {msg.splitlines()[0][:400] if msg else ''}")
    plugins = request.config.pluginmanager
    tr = plugins.get_plugin("terminalreporter")
    capman = plugins.get_plugin("capturemanager")
    if tr is None:
        return
    with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
        tr.write_line("")
        tr.write_line(f"fuzz executions per target (IBI_FUZZ_EXAMPLES={EXAMPLES}):")
        for ln in lines:
            tr.write_line(ln)


# ---------------------------------------------------------------------- valid files

CREATED = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
KERNEL = KernelRef("6.12.48+deb13-amd64", "6.12.48+deb13-amd64-0123456789ab", "a" * 64,
                   "b" * 64, 12345678, "c" * 64)
BASE = ImageMeta("base", Kind.BASE, CREATED, "0" * 64, 4096, "the base", None, (),
                 "a1a1a1a1a1a1a1a1", 1767323045000000000, "zstd", (KERNEL,))
INC1 = ImageMeta("inc1", Kind.INCREMENTAL, CREATED + dt.timedelta(hours=1), "1" * 64, 8192,
                 "first", "base", ("base",), "0123456789abcdef", 1767326645000000000, "zstd",
                 (KERNEL,))
LAYER_ID = "5f0c8e1d2a3b4c6d"
CAPTURE_ID = "000001-20260102-030405-save"
CAPTURE_DOC: dict[str, Any] = {
    "format": 1, "created": "2026-01-02T03:04:05Z", "reason": "save", "stack": ["base", "inc1"],
    "registry": {"hostname": {"name": "box", "fqdn": "box.example.org"},
                 "timezone": {"zone": "Europe/Paris"}},
    "stash": {"/etc/adjtime": {"/etc/adjtime": {"what": "file, 3 bytes, sha256 1234",
                                                "digest": "d" * 64}},
              "/etc/ssh/ssh_host_*": {"/etc/ssh/ssh_host_ed25519_key": {
                  "what": "file, 9 bytes", "digest": "e" * 64}}},
    "notes": ["/etc/machine-id deleted: not captured"],
    "pinned": {"timezone": {"zone": "UTC"}},
}
PENDING_DOC = {"action": "rollback", "queued": "2026-01-02T03:04:05+00:00", "name": "base",
               "description": "back", "keep": "hostname,/etc/adjtime"}
TRIAL_DOC = {"format": 1, "stack": ["base", "inc1"], "good": ["base"], "tries": 3,
             "armed": "2026-01-02T03:04:05Z", "reason": "switch", "good_layer": LAYER_ID,
             "failure": "health checks failed: 50-check (exit 1)"}
FALLBACK_DOC = {"format": 1, "failed": ["base", "inc2"], "good": ["base", "inc1"], "boots": 3,
                "at": "2026-01-02T03:04:05Z", "why": "3 boots did not complete"}
POLICY_DOC = {"format": 1, "boot_tries": 2, "keep_last": 4, "keep_days": 10, "max_depth": 8}
LAYER_KERNELS_DOC = {"format": 1, "layer": LAYER_ID, "stack": ["base", "inc1"],
                     "kernels": [kernel_to_doc(KERNEL)]}


def dump(doc: object) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode()


SEEDS: dict[str, bytes] = {
    "roottab": render_roottab(["base", "inc1"]).encode(),
    "roottab.prev": render_roottab(["base"]).encode(),
    "base.yaml": meta_to_yaml(BASE).encode(),
    "inc1.yaml": meta_to_yaml(INC1).encode(),
    "pending": dump(PENDING_DOC),
    "preserve": b"# paths kept across Restore\n/etc/fstab\n/etc/network/interfaces  # net\n",
    "layer/kernels.yaml": dump(LAYER_KERNELS_DOC),
    "layer/id": f"{LAYER_ID}\n".encode(),
    "state.yaml": statemod.DEFAULT_CONFIG.encode(),
    "capture.yaml": dump(CAPTURE_DOC),
    "trial": dump(TRIAL_DOC),
    "fallback": dump(FALLBACK_DOC),
    "policy": dump(POLICY_DOC),
}
DOCS: dict[str, Any] = {
    "base.yaml": yaml.safe_load(SEEDS["base.yaml"]),
    "inc1.yaml": yaml.safe_load(SEEDS["inc1.yaml"]),
    "pending": PENDING_DOC, "layer/kernels.yaml": LAYER_KERNELS_DOC,
    "state.yaml": yaml.safe_load(SEEDS["state.yaml"]), "capture.yaml": CAPTURE_DOC,
    "trial": TRIAL_DOC, "fallback": FALLBACK_DOC, "policy": POLICY_DOC,
}
WHERE = {  # each target's file, under the data directory
    "roottab": ".root_images/roottab", "roottab.prev": ".root_images/roottab.prev",
    "base.yaml": ".root_images/base.yaml", "inc1.yaml": ".root_images/inc1.yaml",
    "pending": ".root_images/pending", "preserve": ".root_images/preserve",
    "bootplan": ".root_images/bootplan", "layer/kernels.yaml": "layer/kernels.yaml",
    "layer/id": "layer/id", "state.yaml": "state/state.yaml",
    "capture.yaml": f"state/captures/{CAPTURE_ID}/capture.yaml",
    "trial": ".root_images/trial", "fallback": ".root_images/fallback",
    "policy": ".root_images/policy",
}


def make_store(data: Path) -> Store:
    """A store with every file valid (images are a few bytes: nothing here mounts them)."""
    s = Store(data)
    for d in (s.root, s.upper, s.work, s.home, s.captures / CAPTURE_ID / "stash/etc/ssh"):
        d.mkdir(parents=True, exist_ok=True)
    for name in ("base", "inc1"):
        s.image_path(name).write_bytes(b"hsqs" + bytes(60))
    for target, rel in WHERE.items():
        if target != "bootplan":
            (data / rel).write_bytes(SEEDS[target])
    stash = s.captures / CAPTURE_ID / "stash/etc"
    (stash / "adjtime").write_text("0.0 0 0.0\n0\nUTC\n")
    (stash / "ssh/ssh_host_ed25519_key").write_text("key\n")
    bootplan.write(s)
    return s


def _seed_plan() -> bytes:
    with tempfile.TemporaryDirectory() as t:
        return (make_store(Path(t) / "data").root / "bootplan").read_bytes()


SEEDS["bootplan"] = _seed_plan()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("fuzz-template") / "data"
    make_store(data)
    return data


@pytest.fixture(scope="module")
def store(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the readers that read a single file (rewritten by each example)."""
    data = tmp_path_factory.mktemp("fuzz-store") / "data"
    shutil.copytree(template, data, symlinks=True)
    return Store(data)


def put(data: Path, target: str, content: bytes) -> Path:
    path = data / WHERE[target]
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------- the shell reader

DRIVER = """\
getarg() { return 1; }
ismounted() { return 1; }
label_uuid_to_dev() { return 1; }
. "$IBI_LIB"
IBI_DATA=$1
ibi_plan_current; echo $? > "$2/current.rc"
for ibi_fz_k in normal fallback menu good; do
    ibi_plan_stacks "$ibi_fz_k" > "$2/$ibi_fz_k"; echo $? > "$2/$ibi_fz_k.rc"
done
ibi_plan_stacks review "$3" > "$2/review"; echo $? > "$2/review.rc"
ibi_plan_stack normal > "$2/stack.out"; echo $? > "$2/stack.rc"
printf '%s' "$IBI_NAMES" > "$2/stack.names"
ibi_plan_image "$3" > "$2/image"; echo $? > "$2/image.rc"
ibi_plan_tries > "$2/tries"; echo $? > "$2/tries.rc"
exit 0
"""
RC = {"current": {0, 1}, "normal": {0}, "fallback": {0}, "menu": {0}, "review": {0},
      "stack": {0, 1}, "image": {0, 1}, "good": {0}, "tries": {0}}


def run_shell(data: Path, review: str) -> dict[str, Any]:
    """The boot plan's shell functions on ``data`` under dash: their outputs and statuses."""
    out = data.parent / "sh-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    cwd = data.parent / "sh-cwd"  # a file to find should a name be globbed
    cwd.mkdir(exist_ok=True)
    (cwd / "GLOBBED").touch()
    try:
        p = subprocess.run([SH, "-c", DRIVER, "ibi-fuzz", str(data), str(out), review],
                           cwd=cwd, capture_output=True, timeout=HANG_SECONDS,
                           env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                "IBI_LIB": str(LIB), "IBI_LIBDIR": str(LIB.parent),
                                "LC_ALL": "C"})
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the shell reader hangs (no answer after {HANG_SECONDS} s)") \
            from None
    assert p.returncode == 0 and not p.stderr, (p.returncode, p.stderr)
    res: dict[str, Any] = {}
    for fn, allowed in RC.items():
        rc = int((out / f"{fn}.rc").read_text())
        assert rc in allowed, f"{fn} returned {rc}"
        res[f"{fn}.rc"] = rc
    for fn in ("normal", "fallback", "menu", "review", "stack.out", "stack.names", "image",
               "good", "tries"):
        res[fn] = (out / fn).read_bytes().decode("utf-8", "surrogateescape")
    return res
