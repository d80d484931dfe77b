"""Fuzzing the readers of the store's files (hypothesis): roottab, image metadata, pending,
trial, fallback, policy, preserve, the layer's kernels.yaml, state.yaml and captures; files
that cannot be read at all; state.py's refusals of damaged files.

Each file is written as bytes into a store in a temp directory and read back through the
real API (Store, Engine, maintenance/state.py): random bytes, valid files with non-UTF-8
bytes, NULs, CR/LF mixes, deep nesting, very long lines spliced in, and valid YAML of the
wrong types. A reader returns a well-typed value or raises an IbiError whose message is one
line and names the file; never another exception, never a hang.

The initramfs' boot plan reader (ibi-lib.sh sourced by dash), status and the boot plan over
a damaged store, and the round trips are in tests/test_fuzz_boot.py; the machinery (the
valid store, the fixtures; IBI_FUZZ_EXAMPLES and IBI_FUZZ_COLLECT) in tests/fuzzkit.py, the
strategies and the checks in tests/fuzzchecks.py.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from maintenance import bootplan
from maintenance import state as statemod
from maintenance.bootrecords import PENDING_ACTIONS
from maintenance.engine import Engine
from maintenance.errors import IbiError
from maintenance.model import Fallback, Policy, Trial
from maintenance.store import Store
from maintenance.wording import notice_text
from tests import fuzzkit
from tests.fuzzchecks import (
    check_capture,
    check_config,
    check_error,
    check_kernel,
    check_meta,
    count,
    file_bytes,
    future_format,
    no_hang,
    one_line,
    read,
    safe_name,
    text_ok,
)
from tests.fuzzkit import (
    BASE,
    CAPTURE_DOC,
    CAPTURE_ID,
    CREATED,
    FUZZ,
    INC1,
    KERNEL,
    LAYER_ID,
    OPS,
    PENDING_DOC,
    SEEDS,
    WHERE,
    put,
    run_shell,
    target,
)

# the fixtures, by name: pytest finds them in this module (the executions are printed
# at its end)
_executions = fuzzkit._executions
store = fuzzkit.store
template = fuzzkit.template


# ---------------------------------------------------------------------- the readers

def test_the_valid_store_reads_clean(template: Path, tmp_path: Path) -> None:
    """The store every fuzzed file is put in: each reader takes its files as they are,
    status has nothing to report, and the shell finds the plan current."""
    s = Store(template)
    assert s.read_roottab() == ["base", "inc1"] and s.read_roottab(prev=True) == ["base"]
    assert (s.read_meta("base"), s.read_meta("inc1")) == (BASE, INC1)
    assert s.read_pending() == PENDING_DOC
    assert s.read_preserve() == ["/etc/fstab", "/etc/network/interfaces"]
    assert s.read_layer_kernels() == (LAYER_ID, ["base", "inc1"], (KERNEL,))
    cfg, default = statemod.load_config(s), statemod.parse_config(statemod.DEFAULT_CONFIG)
    assert [op.name for op in cfg.registry] == [op.name for op in default.registry]
    assert (cfg.stash, cfg.reference, cfg.keep) == (default.stash, default.reference,
                                                    default.keep)
    assert [c.id for c in statemod.captures(s)] == [CAPTURE_ID]
    assert s.read_trial() == Trial(("base", "inc1"), ("base",), 3, CREATED, "switch",
                                   LAYER_ID, "health checks failed: 50-check (exit 1)")
    assert s.read_fallback() == Fallback(("base", "inc2"), ("base", "inc1"), 3, CREATED,
                                         "3 boots did not complete")
    assert s.read_policy() == Policy(2, 4, 10, 8)
    status = Engine(template, tmp_path / "run").status()
    assert [n for n in status.notices if "low space" not in notice_text(n) and
            "queued" not in notice_text(n) and "on trial" not in notice_text(n)
            and "automatic fallback" not in notice_text(n)] == []
    assert status.trial is not None and status.fallback is not None
    assert bootplan.is_current(s)
    res = run_shell(template, "inc1")
    assert (res["current.rc"], res["normal"], res["review"]) == (0, "base inc1\n",
                                                                 "base inc1\n")


@FUZZ
@given(content=file_bytes("roottab"), prev=st.booleans())
@target("roottab")
def test_roottab(store: Store, content: bytes, prev: bool) -> None:
    target = "roottab.prev" if prev else "roottab"
    put(store.data, target, content)
    got = read(store.read_roottab, prev, names=(target,))
    if not isinstance(got, IbiError):
        assert type(got) is list and got, got
        assert all(safe_name(n) for n in got) and len(set(got)) == len(got), got


@FUZZ
@given(content=file_bytes("base.yaml"))
@target("image metadata")
def test_image_metadata(store: Store, content: bytes) -> None:
    put(store.data, "base.yaml", content)
    got = read(store.read_meta, "base", names=("base.yaml",))
    fmt = future_format(content)
    if fmt is not None:
        assert isinstance(got, IbiError) and str(fmt) in str(got), \
            f"metadata of format {fmt} read as {got}"
    if not isinstance(got, IbiError):
        check_meta(got, "base")
    assert store.try_meta("base") == (None if isinstance(got, IbiError) else got)


@FUZZ
@given(content=file_bytes("pending"))
@target("pending")
def test_pending(store: Store, content: bytes) -> None:
    put(store.data, "pending", content)
    got = read(store.read_pending, names=("pending",))
    if got is not None and not isinstance(got, IbiError):
        assert type(got) is dict and got.get("action") in PENDING_ACTIONS, got
        assert all(text_ok(k) and text_ok(v) for k, v in got.items()), got


@FUZZ
@given(content=file_bytes("trial"))
@target("trial")
def test_trial(store: Store, content: bytes) -> None:
    put(store.data, "trial", content)
    got = read(store.read_trial, names=("trial",))
    if got is not None and not isinstance(got, IbiError):
        assert type(got) is Trial and 1 <= got.tries <= 20, got
        assert got.stack and got.good and all(safe_name(n) for n in got.stack + got.good)
        assert got.good_layer is None or (text_ok(got.good_layer) and
                                          got.good_layer.isalnum()), got
        assert text_ok(got.reason) and one_line(got.reason), got
        assert got.failure == "" or (text_ok(got.failure) and one_line(got.failure)), got
        store.write_trial(got)  # round trip
        assert store.read_trial() == got


@FUZZ
@given(content=file_bytes("fallback"))
@target("fallback")
def test_fallback(store: Store, content: bytes) -> None:
    put(store.data, "fallback", content)
    got = read(store.read_fallback, names=("fallback",))
    if got is not None and not isinstance(got, IbiError):
        assert type(got) is Fallback and count(got.boots), got
        assert got.failed and got.good and all(safe_name(n) for n in got.failed + got.good)
        assert got.why == "" or (text_ok(got.why) and one_line(got.why)), got
        store.write_fallback(got)
        assert store.read_fallback() == got


@FUZZ
@given(content=file_bytes("policy"))
@target("policy")
def test_policy(store: Store, content: bytes) -> None:
    put(store.data, "policy", content)
    got = read(store.read_policy, names=("policy",))
    if not isinstance(got, IbiError):
        assert type(got) is Policy and 0 <= got.boot_tries <= 20, got
        assert count(got.keep_last) and count(got.keep_days), got
        assert count(got.max_depth) and got.max_depth >= 2, got


@FUZZ
@given(content=file_bytes("preserve"))
@target("preserve")
def test_preserve(store: Store, content: bytes) -> None:
    """The old list of paths, read alone and as the default state config's extra paths
    (load_config with no state.yaml)."""
    put(store.data, "preserve", content)
    got = read(store.read_preserve, names=("preserve",))
    if not isinstance(got, IbiError):
        assert type(got) is list
        for p in got:
            assert text_ok(p) and p.startswith("/") and "\0" not in p, p
            assert ".." not in p.split("/") and os.path.normpath(p) == p, p
    store.state_conf.unlink(missing_ok=True)
    try:
        cfg = read(statemod.load_config, store, names=("preserve", "state.yaml"))
    finally:
        put(store.data, "state.yaml", SEEDS["state.yaml"])
    if not isinstance(cfg, IbiError):
        check_config(cfg)


@FUZZ
@given(content=file_bytes("layer/kernels.yaml"))
@target("layer kernels.yaml")
def test_layer_kernels(store: Store, content: bytes) -> None:
    put(store.data, "layer/kernels.yaml", content)
    got = read(store.read_layer_kernels, names=("kernels.yaml",))
    if got is None or isinstance(got, IbiError):
        return
    layer, stack, kernels = got
    assert layer is None or text_ok(layer), layer
    assert type(stack) is list and all(safe_name(n) for n in stack), stack
    assert type(kernels) is tuple
    for k in kernels:
        check_kernel(k)


@FUZZ
@given(content=file_bytes("state.yaml"))
@target("state.yaml")
def test_state_config(store: Store, content: bytes) -> None:
    put(store.data, "state.yaml", content)
    got = read(statemod.load_config, store, names=("state.yaml",))
    fmt = future_format(content)
    if fmt is not None:
        assert isinstance(got, IbiError) and str(fmt) in str(got), got
    if not isinstance(got, IbiError):
        check_config(got)


@FUZZ
@given(content=file_bytes("capture.yaml"))
@target("capture.yaml")
def test_capture(store: Store, content: bytes) -> None:
    put(store.data, "capture.yaml", content)
    d = store.captures / CAPTURE_ID
    got = read(statemod._load, d, names=(f"capture {CAPTURE_ID}",))
    fmt = future_format(content)
    if fmt is not None:
        assert isinstance(got, IbiError) and str(fmt) in str(got), got
    if not isinstance(got, IbiError):
        check_capture(got)
    caps = no_hang(statemod.captures, store)  # a damaged capture is passed over
    assert [c.id for c in caps] == ([] if isinstance(got, IbiError) else [CAPTURE_ID])
    cfg = statemod.parse_config(statemod.DEFAULT_CONFIG, ops=OPS)
    for c in caps:
        info = statemod.info(c, cfg)
        assert all(v.value is None or text_ok(v.value) for v in info.values)


# ---------------------------------------------------------------------- unreadable files

@pytest.mark.parametrize("target", ["roottab", "base.yaml", "pending", "preserve",
                                    "layer/kernels.yaml", "state.yaml", "capture.yaml"])
@pytest.mark.parametrize("how", ["directory", "symlink loop"])
def test_unreadable_file_is_named(template: Path, tmp_path: Path, target: str,
                                  how: str) -> None:
    """A file that cannot be read at all: its reader names it (or, for the layer's kernel
    record, reads it as none), and status still answers."""
    d = tmp_path / "data"
    shutil.copytree(template, d, symlinks=True)
    path = d / WHERE[target]
    path.unlink()
    if how == "directory":
        path.mkdir()
    else:
        path.symlink_to(path.name)
    s = Store(d)
    name = os.path.basename(WHERE[target])
    reader: Callable[[], object] = {
        "roottab": s.read_roottab, "base.yaml": lambda: s.read_meta("base"),
        "pending": s.read_pending, "preserve": s.read_preserve,
        "layer/kernels.yaml": s.read_layer_kernels,
        "state.yaml": lambda: statemod.load_config(s),
        "capture.yaml": lambda: statemod._load(s.captures / CAPTURE_ID)}[target]
    got = read(reader, names=(name, CAPTURE_ID))
    if target == "layer/kernels.yaml":
        assert got is None
    else:
        assert isinstance(got, IbiError), f"{how} {name} read as {got!r}"
    read(Engine(d, tmp_path / "run").status, names=(name,))


# ---------------------------------------------------------------------- state.py's fixes

@pytest.mark.parametrize(("text", "said"), [
    ("format: 1\n\x00stash: []\n", "line 2: not valid YAML (character #x0000 is not allowed)"),
    ("registry: " + "[" * 1200, "not valid YAML (nested too deeply)"),
    ("? [a]\n: 1\n", "line 1: expected a name before ':'"),
    ("format: [1]\n", "line 1: format (not a number) is not known"),
    ("format: 99\n", "line 1: format 99 is not known (this ibi reads format 1)"),
    ("stash: 2\nformat: 2\n", "line 2: format 2 is not known"),
    ("format: \"1\\n2\"\n", "line 1: format 1 2 is not known"),
    ("keep: [5]\n", "line 1: keep must be a number"),
    ("stash:\n  - \"/etc/a\\x1bb\"\n", "line 2: '/etc/a\\x1bb': control characters in a path"),
])
def test_state_config_refusals_are_one_line(text: str, said: str) -> None:
    with pytest.raises(IbiError) as e:
        statemod.parse_config(text, "state.yaml", ops=OPS)
    check_error(e.value, "state.yaml")
    assert said in str(e.value)


def test_state_config_default_passes_over_a_preserve_that_is_not_text(store: Store) -> None:
    put(store.data, "preserve", b"/etc/fstab\n/etc/caf\xe9\n")
    store.state_conf.unlink()
    try:
        cfg = statemod.load_config(store)
    finally:
        put(store.data, "state.yaml", SEEDS["state.yaml"])
    assert cfg.stash == statemod.parse_config(statemod.DEFAULT_CONFIG, ops=OPS).stash


def _capture_with(**changes: Any) -> bytes:
    doc = copy.deepcopy(CAPTURE_DOC)
    doc.update(changes)
    return yaml.safe_dump(doc, allow_unicode=True).encode("utf-8", "surrogatepass")


@pytest.mark.parametrize(("content", "said"), [
    (b"format: 1\ncreated: [\n", "not valid YAML (line 3: "),
    (b"format: 1\nstack: \x00\n", "not valid YAML (line 2: character #x0000 is not allowed)"),
    (b"format: 1\ncreated: " + b"1" * 5000 + b"\n", "unreadable (ValueError: Exceeds the limit"),
    (b"format: 1\nstack: " + b"[" * 1200, "unreadable (RecursionError: maximum recursion"),
    (b"format: 1\nreason: caf\xe9\n", "not UTF-8 text (byte 21)"),
    (b"format: 1\nreason: !!int ''\n", "unreadable (IndexError: string index out of range)"),
    (b"format: 1\nreason: !!timestamp x\n", "unreadable (AttributeError: "),
    (b"format: 1\nreason: !!bool x\n", "unreadable (KeyError: 'x')"),
    (_capture_with(format=99), "format 99 is not known (this ibi reads format 1)"),
    (_capture_with(format=True), "format True is not known"),
    (_capture_with(registry={"hostname": {"name": "\udcff"}}),
     "registry name is not UTF-8 text"),
    (_capture_with(registry={"hostname": {"name": ["a", "b"]}}),
     "registry name is not text"),
    (_capture_with(notes=[{"a": 1}]), "notes is not text"),
])
def test_damaged_captures_are_refused_in_one_line(store: Store, content: bytes,
                                                  said: str) -> None:
    put(store.data, "capture.yaml", content)
    with pytest.raises(IbiError) as e:
        statemod._load(store.captures / CAPTURE_ID)
    check_error(e.value, f"capture {CAPTURE_ID}")
    assert said in str(e.value)
    assert statemod.captures(store) == []


@pytest.mark.parametrize("created", ["2026-01-02T03:04:05", dt.date(2026, 1, 2),
                                     dt.datetime(2026, 1, 2, 3, 4, 5)])
def test_a_capture_without_a_time_zone_is_utc(store: Store, created: object) -> None:
    put(store.data, "capture.yaml", _capture_with(created=created))
    cap = statemod._load(store.captures / CAPTURE_ID)
    assert cap.created.tzinfo is not None and cap.created.date() == dt.date(2026, 1, 2)
