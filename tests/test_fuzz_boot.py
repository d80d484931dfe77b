"""Fuzzing the initramfs' boot plan reader and what is built from a damaged store
(hypothesis): ibi-lib.sh's plan functions, sourced by dash, over a fuzzed bootplan, roottab
and layer id; Engine.status and the boot plan built from a store with one fuzzed file (or an
image file of an odd name), the plan read back by the shell; and the round trips: a valid
value written and read back is the same value (image metadata, roottab, pending, preserve,
the layer's kernels.yaml, state.yaml, captures; the boot plan, rendered by Python and read
by the shell).

The shell reader gives safe image names only and never fails; status answers, or raises an
IbiError of one line naming the file. The store's own readers are fuzzed in
tests/test_fuzz.py; the machinery (the valid store, the fixtures, the shell driver;
IBI_FUZZ_EXAMPLES and IBI_FUZZ_COLLECT) is in tests/fuzzkit.py, the strategies and the
checks in tests/fuzzchecks.py.
"""

from __future__ import annotations

import contextlib
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
from maintenance.model import ImageMeta, KernelRef, Kind, Level
from maintenance.store import Store
from maintenance.wording import notice_text
from tests import fuzzkit
from tests.fuzzchecks import check_capture, file_bytes, one_line, read, safe_name
from tests.fuzzkit import DRAWN, FUZZ, OPS, SEEDS, WHERE, put, run_shell, target

# the fixtures, by name: pytest finds them in this module (the executions are printed
# at its end)
_executions = fuzzkit._executions
store = fuzzkit.store
template = fuzzkit.template


# ---------------------------------------------------------------------- the shell reader

def check_shell_names(res: dict[str, Any]) -> None:
    for fn in ("normal", "fallback", "menu", "review", "stack.names", "good"):
        bad = [n for n in res[fn].split() if not safe_name(n)]
        assert not bad, f"the shell reader gives unsafe names in {fn}: {bad}"
    assert res["tries"] == "" or res["tries"].strip().isdigit(), res["tries"]
    if res["stack.rc"] == 0:
        assert res["stack.names"].split(), "ibi_plan_stack normal: no names, yet status 0"


@FUZZ
@given(plan=file_bytes("bootplan"), roottab=st.sampled_from([SEEDS["roottab"], b""]) |
       file_bytes("roottab"), layer_id=file_bytes("layer/id"),
       review=st.sampled_from(["base", "inc1", "a b", "../x", "", "*", "base base"]),
       extra=st.sets(st.sampled_from(["a b", "-x", "é", "x*", ".hidden", "GLOBBED"])))
@target("shell reader (ibi-lib.sh)")
def test_shell_reader(template: Path, tmp_path_factory: pytest.TempPathFactory,
                      plan: bytes, roottab: bytes, layer_id: bytes, review: str,
                      extra: set[str]) -> None:
    root = tmp_path_factory.mktemp("sh")
    data = root / "data"
    (data / ".root_images").mkdir(parents=True)
    (data / "layer").mkdir()
    for n in ("base", "inc1", *extra):
        (data / ".root_images" / f"{n}.sqfs").write_bytes(b"hsqs")
    put(data, "bootplan", plan)
    put(data, "roottab", roottab)
    put(data, "layer/id", layer_id)
    check_shell_names(run_shell(data, review))
    shutil.rmtree(root)


# ---------------------------------------------------------------------- status, boot plan

@FUZZ
@given(target=st.sampled_from(sorted(WHERE)), data=st.data(),
       odd_file=st.none() | st.binary(min_size=1, max_size=12).filter(
           lambda b: b"/" not in b and b"\0" not in b and b not in (b".", b"..")))
@target("Engine.status + bootplan")
def test_status_and_boot_plan(template: Path, tmp_path_factory: pytest.TempPathFactory,
                              target: str, data: st.DataObject, odd_file: bytes | None) -> None:
    """A store with one fuzzed file (and maybe an image file of an odd name): status
    reports what is wrong, the boot plan built from it names safe images only, and the
    shell reads back the stacks the plan holds, and finds the plan current."""
    content = data.draw(file_bytes(target), label="content")
    DRAWN["content"] = content
    root = tmp_path_factory.mktemp("status")
    d = root / "data"
    shutil.copytree(template, d, symlinks=True)
    put(d, target, content)
    if odd_file is not None:
        for ext in (b".sqfs", b".yaml"):
            with contextlib.suppress(OSError), \
                    open(os.fsencode(d / ".root_images") + b"/" + odd_file + ext, "wb") as f:
                f.write(b"x")
    eng = Engine(d, root / "run")
    name = os.path.basename(WHERE[target])
    status = read(eng.status, names=(name,))
    if not isinstance(status, IbiError):
        for n in status.notices:
            assert one_line(notice_text(n)), f"notice not one printable line: {notice_text(n)!r}"
        own: Callable[[], object] | None = {
            "roottab": eng.store.read_roottab, "pending": eng.store.read_pending,
            "base.yaml": lambda: eng.store.read_meta("base"),
            "inc1.yaml": lambda: eng.store.read_meta("inc1")}.get(target)
        refused = False
        if own is not None:
            try:
                own()
            except Exception:
                refused = True
        if refused:  # the file's own reader refuses it: status says so
            assert any(name in notice_text(n) for n in status.notices), \
                f"status does not report the damaged {name}: {status.notices}"
        if refused and target == "roottab":
            assert any(n.level is Level.ERROR for n in status.notices)

    st_ = Store(d)
    if target == "layer/id":  # what the initramfs's renewal of a stale plan does first
        # (ibi boot-entries --write recovers): a damaged id is replaced by a new one
        read(eng.recover, names=(name,))
    plan = read(bootplan.build, st_, names=(name,))
    if isinstance(plan, IbiError):
        return
    text = bootplan.render(plan)
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert lines[0] == f"ibi-boot-plan {bootplan.PLAN_VERSION}"
    for ln in lines[1:]:
        kw, *names = ln.split(" ")
        assert kw in ("roottab", "layer", "image", "normal", "fallback", "menu", "review",
                      "trial", "good"), ln
        if kw == "trial":
            assert len(names) == 1 and names[0].isdigit() and 1 <= int(names[0]) <= 20, ln
        elif kw == "image":
            assert len(names) == 3 and safe_name(names[0]) and names[1].isdigit(), ln
        elif kw not in ("roottab", "layer"):
            assert names and all(safe_name(n) for n in names), ln
    wrote = read(bootplan.write, st_, names=(name,))
    if isinstance(wrote, IbiError):
        return
    assert bootplan.is_current(st_)
    res = run_shell(d, plan.reviews[0].name if plan.reviews else "base")
    check_shell_names(res)
    assert res["normal"] == (" ".join(plan.normal) + "\n" if plan.normal else "")
    assert res["fallback"] == (" ".join(plan.fallback) + "\n" if plan.fallback else "")
    assert res["menu"] == "".join(" ".join(s) + "\n" for s in plan.menu)
    assert res["tries"] == (f"{plan.trial}\n" if plan.trial else "")
    assert res["good"] == (" ".join(plan.good) + "\n" if plan.good else "")
    assert res["current.rc"] == 0, f"a plan just written is stale to the initramfs: {text!r}"
    shutil.rmtree(root)


# ---------------------------------------------------------------------- round trips

names = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,20}\Z").filter(safe_name)
kernel_ids = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._+~-]{0,30}\Z")
hexes = st.text("0123456789abcdef", min_size=1, max_size=64)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
kernel_refs = st.builds(KernelRef, version=kernel_ids, id=kernel_ids, vmlinuz_sha256=hexes,
                        initrd_sha256=hexes, size=st.integers(0, 2**40),
                        source_initrd_sha256=st.just("") | hexes)
metas = st.builds(
    ImageMeta, name=names, kind=st.sampled_from(Kind),
    created=st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9999, 1, 1))
    .map(lambda t: t.replace(microsecond=0, tzinfo=dt.UTC)),
    sha256=digests, size=st.integers(0, 2**50), description=texts,
    parent=st.none() | names, stack=st.lists(names, unique=True, max_size=5).map(tuple),
    source_layer=st.none() | hexes, source_stamp=st.none() | st.integers(0, 2**63 - 1),
    compressor=st.sampled_from(["zstd", "xz", "gzip", "lz4"]),
    kernels=st.lists(kernel_refs, max_size=3).map(tuple))


@FUZZ
@given(meta=metas)
@target("round trip: metadata")
def test_metadata_round_trip(store: Store, meta: ImageMeta) -> None:
    store.write_meta(meta)
    try:
        assert store.read_meta(meta.name) == meta
    finally:
        store.meta_path(meta.name).unlink()


@FUZZ
@given(tab=st.lists(names, unique=True, min_size=1, max_size=8),
       prev=st.lists(names, unique=True, min_size=1, max_size=8))
@target("round trip: roottab")
def test_roottab_round_trip(store: Store, tab: list[str], prev: list[str]) -> None:
    store.write_roottab(prev)
    store.write_roottab(tab)
    assert store.read_roottab() == tab
    assert store.read_roottab(prev=True) == prev


@FUZZ
@given(action=st.sampled_from(PENDING_ACTIONS), name=st.none() | names,
       description=texts, keep=st.none() | texts)
@target("round trip: pending")
def test_pending_round_trip(store: Store, action: str, name: str | None, description: str,
                            keep: str | None) -> None:
    doc = {"action": action, "queued": "2026-01-02T03:04:05+00:00"}
    for k, v in (("name", name), ("description", description), ("keep", keep)):
        if v:
            doc[k] = v
    store.write_pending(doc)
    assert store.read_pending() == doc


path_parts = st.from_regex(r"\A[A-Za-z0-9_][A-Za-z0-9._ -]{0,12}\Z").filter(
    lambda s: s.strip() == s)


@FUZZ
@given(paths=st.lists(st.lists(path_parts, min_size=1, max_size=4).map(
    lambda ps: "/" + "/".join(ps)), max_size=6))
@target("round trip: preserve")
def test_preserve_round_trip(store: Store, paths: list[str]) -> None:
    put(store.data, "preserve", "".join(f"{p}\n" for p in paths).encode())
    assert store.read_preserve() == paths


@FUZZ
@given(layer=st.none() | hexes, stack=st.lists(names, unique=True, max_size=5),
       kernels=st.lists(kernel_refs, max_size=3).map(tuple))
@target("round trip: layer kernels.yaml")
def test_layer_kernels_round_trip(store: Store, layer: str | None, stack: list[str],
                                  kernels: tuple[KernelRef, ...]) -> None:
    store.write_layer_kernels(layer, stack, kernels)
    assert store.read_layer_kernels() == (layer, stack, kernels)


@FUZZ
@given(registry=st.lists(st.sampled_from(sorted(OPS)), unique=True),
       stash=st.lists(path_parts, unique=True, max_size=4),
       reference=st.lists(path_parts, unique=True, max_size=4),
       keep=st.integers(1, 100), flow=st.sampled_from([False, True, None]))
@target("round trip: state.yaml")
def test_state_config_round_trip(registry: list[str], stash: list[str], reference: list[str],
                                 keep: int, flow: bool | None) -> None:
    stash_paths = [f"/srv/stash/{p}" for p in stash]
    ref_paths = [f"/srv/reference/{p}" for p in reference]
    text = yaml.safe_dump({"format": 1, "keep": keep, "registry": registry,
                           "stash": stash_paths, "reference": ref_paths},
                          default_flow_style=flow, allow_unicode=True)
    cfg = statemod.parse_config(text, ops=OPS)
    assert [op.name for op in cfg.registry] == registry
    assert (list(cfg.stash), list(cfg.reference), cfg.keep) == (stash_paths, ref_paths, keep)


values_st = st.dictionaries(st.sampled_from(sorted(OPS)), st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8), texts, min_size=1,
    max_size=3), max_size=3)


@FUZZ
@given(registry=values_st, pinned=values_st, stack=st.lists(names, max_size=4),
       notes=st.lists(texts, max_size=3), files=st.lists(path_parts, unique=True, max_size=3),
       reason=st.sampled_from(["save", "install", "create", "boot"]))
@target("round trip: capture.yaml")
def test_capture_round_trip(tmp_path_factory: pytest.TempPathFactory,
                            registry: dict[str, dict[str, str]], pinned: dict[str, dict[str, str]],
                            stack: list[str], notes: list[str], files: list[str],
                            reason: str) -> None:
    """What state.py writes (its own _write) it reads back the same."""
    s = Store(tmp_path_factory.mktemp("cap") / "data")
    s.root.mkdir(parents=True)
    cfg = statemod.parse_config(statemod.DEFAULT_CONFIG, ops=OPS)

    def fill(root: Path) -> dict[str, dict[str, dict[str, str]]]:
        out: dict[str, dict[str, dict[str, str]]] = {}
        for i, f in enumerate(files):
            p = f"/srv/{f}"
            (root / "srv").mkdir(exist_ok=True)
            (root / "srv" / f).write_text(str(i))
            out[p] = {p: {"what": f"file, {i} bytes", "digest": f"{i:064x}"}}
        return out

    cap = statemod._write(s, cfg, reason, tuple(stack), registry, notes, fill, None,
                          force=True, pinned=pinned)
    assert cap is not None
    again = statemod._load(cap.dir)
    assert again == cap
    assert (again.registry, again.pinned, list(again.stack), list(again.notes)) == (
        registry, pinned, stack, notes)
    assert set(again.stashed()) == {f"/srv/{f}" for f in files}
    check_capture(again)
    shutil.rmtree(s.data.parent)


plans = st.builds(
    lambda normal, fallback, menu, reviews, cksum, layer: bootplan.BootPlan(
        cksum, normal, fallback, tuple(menu),
        tuple(bootplan.Review(n, "incremental", "2026-01-02 03:04", s) for n, s in reviews),
        layer),
    st.none() | st.lists(names, min_size=1, max_size=5).map(tuple),
    st.none() | st.lists(names, min_size=1, max_size=5).map(tuple),
    st.lists(st.lists(names, min_size=1, max_size=4).map(tuple), max_size=4),
    st.dictionaries(names, st.lists(names, min_size=1, max_size=4).map(tuple),
                    max_size=4).map(lambda d: list(d.items())),
    st.none() | st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**40)),
    st.none() | hexes)


@FUZZ
@given(plan=plans, roottab=st.binary(max_size=200), pick=st.integers(0, 10),
       sizes=st.lists(st.tuples(st.integers(0, 2**50), digests), min_size=30, max_size=30))
@target("round trip: bootplan (shell)")
def test_boot_plan_round_trip(tmp_path_factory: pytest.TempPathFactory,
                              plan: bootplan.BootPlan, roottab: bytes, pick: int,
                              sizes: list[tuple[int, str]]) -> None:
    """What bootplan.render writes, the initramfs reads back: each stack, the review of
    each image, and the plan is current exactly when roottab's cksum and the layer's id
    are the plan's (Python's posix_cksum is cksum(1)'s)."""
    root = tmp_path_factory.mktemp("plan")
    data = root / "data"
    (data / ".root_images").mkdir(parents=True)
    (data / "layer").mkdir()
    names_in = {n for s in (plan.normal or (), plan.fallback or (), *plan.menu) for n in s}
    for r in plan.reviews:
        names_in |= set(r.stack)
    for n in names_in:
        (data / ".root_images" / f"{n}.sqfs").write_bytes(b"hsqs")
    put(data, "roottab", roottab)
    images = tuple(bootplan.ImageCheck(n, *sizes[i % len(sizes)])
                   for i, n in enumerate(sorted(names_in)))
    plan = bootplan.BootPlan(bootplan.posix_cksum(roottab) if pick else plan.roottab_cksum,
                             plan.normal, plan.fallback, plan.menu, plan.reviews, plan.layer_id,
                             images)
    if plan.layer_id is not None:
        put(data, "layer/id", f"{plan.layer_id}\n".encode())
    put(data, "bootplan", bootplan.render(plan).encode())
    review = plan.reviews[pick % len(plan.reviews)] if plan.reviews else None
    res = run_shell(data, review.name if review else "nothing")
    check_shell_names(res)
    assert res["normal"] == (" ".join(plan.normal) + "\n" if plan.normal else "")
    assert res["fallback"] == (" ".join(plan.fallback) + "\n" if plan.fallback else "")
    assert res["menu"] == "".join(" ".join(s) + "\n" for s in plan.menu)
    assert res["review"] == (" ".join(review.stack) + "\n" if review else "")
    check = next((i for i in images if review and i.name == review.name), None)
    assert (res["image.rc"], res["image"]) == ((0, f"{check.size} {check.sha256}\n") if check
                                               else (1, ""))
    assert (res["stack.rc"] == 0) == bool(plan.normal)
    if plan.normal:
        assert res["stack.names"].split() == list(plan.normal)
    current = plan.roottab_cksum == bootplan.posix_cksum(roottab)
    assert res["current.rc"] == (0 if current else 1), (plan.roottab_cksum, roottab)
    shutil.rmtree(root)
