"""Fuzzing the readers of the store's files and the initramfs' boot plan reader (hypothesis).

Each file is written as bytes into a store in a temp directory and read back through the
real API (Store, Engine, maintenance/state.py, and ibi-lib.sh sourced by dash): random
bytes, valid files with non-UTF-8 bytes, NULs, CR/LF mixes, deep nesting, very long lines
spliced in, and valid YAML of the wrong types. A reader returns a well-typed value or raises
an IbiError whose message is one line and names the file; never another exception, never a
hang. A valid file round-trips (render -> parse gives the same value).

IBI_FUZZ_EXAMPLES sets the examples per target (default: a short run for CI); the number
of executions per target is printed at the end of the module.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import datetime as dt
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import traceback
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from maintenance import bootplan
from maintenance import state as statemod
from maintenance.engine import Engine
from maintenance.errors import IbiError
from maintenance.model import Fallback, ImageMeta, KernelRef, Kind, Level, Policy, Trial
from maintenance.operators import RegistryOperator, available
from maintenance.store import (
    PENDING_ACTIONS,
    Store,
    check_kernel_id,
    check_name,
    kernel_to_doc,
    meta_to_yaml,
    render_roottab,
)
from maintenance.wording import notice_text

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
T = TypeVar("T")
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
    """Print the executions per target when the module is done (with or without -s)."""
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


# ---------------------------------------------------------------------- strategies

SNIPPETS = [
    b"\x00", b"\r", b"\r\n", b"\n", b"\n\n", b"\xff", b"\xfe", b"\xc3", b"\xc3\x28",
    b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc2\x85", b"\xe2\x80\xa8", b"\xef\xbb\xbf",
    b"\x0b", b"\x0c", b"\x1c", b"\x1b[2J", b"\t", b" ", b"#", b"..", b"../", b"/../../etc",
    b"/", b"a b", b"*", b"?", b"[", b"]", b"{", b"}", b"$(reboot)", b"`id`", b"\\", b"'",
    b'"', b":", b": ", b"- ", b"---\n", b"...\n", b"&a ", b"*a", b"!!binary ",
    b"!!python/object/apply:os.system ['true']", b"%YAML 1.1\n", b"? ", b"|\n", b"~",
    b"null", b"1e400", b".inf", b"-.inf", b".nan", b"99", b"-1", b"0x10", b"0o17", b"1_0",
    b"2026-13-45", b"2026-01-02", b"1" * 5000, b"a" * 70000, b"[" * 3000, b"{a: " * 1000,
    b"- " * 1000, b"base", b"inc1", b"normal ", b"review ", b"menu ", b"roottab ",
    b"layer ", b"format: 99\n", b"format: 2\n", b"!!int ''", b"!!float ''", b"!!bool x",
    b"!!timestamp x", b"!!timestamp 2026-01-02 99:00", b"!!int 0x", b"!!binary x", b"!!set ",
    b"!!str ", b"!!null ", b"!!map ", b"!!seq ", b"!<tag:yaml.org,2002:int> ''",
]
piece = st.sampled_from(SNIPPETS) | st.binary(min_size=1, max_size=8)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """``seed`` with a few bytes inserted, replaced, removed or lines shuffled."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "replace", "delete", "truncate", "dupline",
                                   "crlf", "cr"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(piece)
        elif op == "replace":
            p = draw(piece)
            data[pos:pos + len(p)] = p
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dupline":
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines)))
            lines.insert(j, lines[i])
            data = bytearray(b"\n".join(lines))
        elif op == "crlf":
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
        else:
            data = bytearray(bytes(data).replace(b"\n", b"\r"))
    return bytes(data)


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63),
    st.floats(), st.text(max_size=12), st.dates(), st.datetimes(),
    st.sampled_from(["", "x", "1", "99", "../x", "a/b", "a b", "base", "inc1", "-x", ".x",
                     "a\nb", "a\x00b", "\udcff", "é", "2026-01-02", "restore", "/etc/x",
                     "/etc/../x", "/home/x", "/etc/*/x", "hostname"]))
yaml_values = st.recursive(
    yaml_scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6) | st.integers(-2, 2),
                                                         c, max_size=3),
    max_leaves=6)


def _paths(doc: object, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value in a document (keys and list indices)."""
    if at:
        yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*at, i))


DROP = object()


@st.composite
def wrong_types(draw: st.DrawFn, doc: dict[str, Any]) -> bytes:
    """``doc`` with some values replaced by values of any type (or dropped), or some other
    document altogether; dumped as YAML."""
    choice = draw(st.integers(0, 9))
    new: Any
    if choice == 0:
        new = draw(yaml_values)
    else:
        new = copy.deepcopy(doc)
        spots = [*_paths(doc), ("format",), ("extra",)]
        for at in draw(st.lists(st.sampled_from(spots), min_size=1, max_size=3)):
            parent = new
            for k in at[:-1]:
                try:
                    parent = parent[k]
                except (KeyError, IndexError, TypeError):
                    break
            else:
                value = draw(st.just(DROP) | yaml_values | st.integers(2, 10**6))
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    if value is DROP:
                        del parent[at[-1]]
                    else:
                        parent[at[-1]] = value
    text = yaml.safe_dump(new, sort_keys=False, allow_unicode=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([False, True, None])))
    return text.encode("utf-8", "surrogatepass")


deep_nesting = st.builds(
    lambda prefix, open_, n, close: prefix + open_ * n + (close * n if close else b""),
    st.sampled_from([b"", b"stack: ", b"kernels: ", b"registry: ", b"format: 1\nstash: "]),
    st.sampled_from([b"[", b"{a: ", b"- ", b"&x ["]), st.sampled_from([1, 2, 50, 400, 1200]),
    st.sampled_from([b"]", b"}", b""]))
lines_of = st.lists(st.binary(max_size=24) | st.sampled_from(SNIPPETS), max_size=8).flatmap(
    lambda parts: st.sampled_from([b"\n", b"\r\n", b"\r", b"\x00", b""]).map(
        lambda sep: sep.join(parts)))


def file_bytes(target: str) -> st.SearchStrategy[bytes]:
    """What a damaged (or hand-edited, or valid) ``target`` file may hold."""
    seed = SEEDS[target]
    parts: list[st.SearchStrategy[bytes]] = [
        mutated(seed), st.binary(max_size=300), lines_of, deep_nesting,
        st.just(seed), st.builds(lambda s, p: s + p, st.just(seed), piece)]
    if target in DOCS:
        parts += [wrong_types(DOCS[target]), wrong_types(DOCS[target]).flatmap(mutated)]
    return st.one_of(*parts)


# ---------------------------------------------------------------------- checks

class Hang(BaseException):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no answer after {HANG_SECONDS} s")


def no_hang(fn: Callable[..., T], *args: Any) -> T:
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        return fn(*args)
    except Hang:  # a BaseException on its way out (no reader catches it); a failure here
        raise AssertionError(f"{fn.__qualname__} hangs: no answer after {HANG_SECONDS} s") \
            from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def one_line(text: str) -> bool:
    """Non-empty, one line, and nothing a terminal would act on (control characters)."""
    return bool(text) and text.splitlines() == [text] and not any(
        unicodedata.category(c) in ("Cc", "Zl", "Zp") and c != "\t" for c in text)


def check_error(e: IbiError, *names: str) -> None:
    assert one_line(str(e)), f"not one printable line: {str(e)!r}"
    assert e.hint is None or one_line(e.hint), f"hint not one printable line: {e.hint!r}"
    assert any(n in str(e) for n in names), f"the message names none of {names}: {str(e)!r}"


def read(fn: Callable[..., T], *args: Any, names: tuple[str, ...]) -> T | IbiError:
    """fn(*args), or the IbiError it raised (checked); any other exception propagates."""
    try:
        return no_hang(fn, *args)
    except IbiError as e:
        check_error(e, *names)
        return e
    except RecursionError as e:  # pytest cannot print a traceback that deep: the place
        tb = traceback.extract_tb(e.__traceback__)
        ours = [f for f in tb if "/maintenance/" in f.filename]
        where = " ... ".join(f"{f.filename}:{f.lineno} {f.name}" for f in (*ours[-1:], tb[-1]))
        raise AssertionError(f"RecursionError escaped ({where}): {e}") from None


def safe_name(n: object) -> bool:
    try:
        check_name(n)  # type: ignore[arg-type]
    except IbiError:
        return False
    return True


def text_ok(s: object) -> bool:
    """A str that can be printed and written back (no lone surrogates)."""
    if type(s) is not str:
        return False
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def count(n: object) -> bool:
    return type(n) is int and n >= 0


def future_format(data: bytes) -> int | None:
    """The ``format`` of a YAML mapping if it is a whole number above 1 (one from a
    later ibi), else None."""
    try:
        doc = yaml.safe_load(data.decode())
    except Exception:  # yaml raises more than YAMLError ("!!int ''": IndexError)
        return None
    if isinstance(doc, dict):
        f = doc.get("format")
        if type(f) is int and f > 1:
            return f
    return None


def check_kernel(k: object) -> None:
    assert isinstance(k, KernelRef)
    check_kernel_id(k.version)
    check_kernel_id(k.id)
    for s in (k.vmlinuz_sha256, k.initrd_sha256, k.source_initrd_sha256):
        assert text_ok(s), s
    assert count(k.size), k.size


def check_meta(m: ImageMeta, name: str) -> None:
    assert isinstance(m, ImageMeta) and m.name == name, m
    assert isinstance(m.kind, Kind)
    assert isinstance(m.created, dt.datetime) and m.created.tzinfo is not None, m.created
    for s in (m.sha256, m.description, m.compressor):
        assert text_ok(s), s
    assert count(m.size), m.size
    assert m.parent is None or text_ok(m.parent), m.parent
    assert type(m.stack) is tuple and all(safe_name(n) for n in m.stack), m.stack
    assert m.source_layer is None or text_ok(m.source_layer), m.source_layer
    assert m.source_stamp is None or count(m.source_stamp), m.source_stamp
    assert type(m.kernels) is tuple
    for k in m.kernels:
        check_kernel(k)


def check_config(cfg: statemod.Config) -> None:
    assert isinstance(cfg, statemod.Config)
    assert type(cfg.keep) is int and 1 <= cfg.keep <= 100, cfg.keep
    assert all(isinstance(op, RegistryOperator) for op in cfg.registry)
    assert len({op.name for op in cfg.registry}) == len(cfg.registry)
    for p in (*cfg.stash, *cfg.reference):
        assert text_ok(p)
        statemod._check_path(p, "fuzz")  # raises if not a path under /


def check_values(d: object) -> None:
    assert type(d) is dict
    for k, vals in d.items():
        assert text_ok(k) and type(vals) is dict, (k, vals)
        assert all(text_ok(f) and text_ok(v) for f, v in vals.items()), vals


def check_capture(c: statemod.Capture) -> None:
    assert isinstance(c, statemod.Capture)
    assert isinstance(c.created, dt.datetime) and c.created.tzinfo is not None, c.created
    assert text_ok(c.reason)
    assert type(c.stack) is tuple and all(text_ok(n) for n in c.stack)
    assert type(c.notes) is tuple and all(text_ok(n) for n in c.notes)
    check_values(c.registry)
    check_values(c.pinned)
    assert type(c.stash) is dict
    for pat, entries in c.stash.items():
        assert text_ok(pat) and type(entries) is dict
        for p, e in entries.items():
            assert text_ok(p) and set(e) == {"what", "digest"}
            assert text_ok(e["what"]) and text_ok(e["digest"])
            assert (c.stash_root / p.lstrip("/")).resolve().is_relative_to(c.stash_root)


def put(data: Path, target: str, content: bytes) -> Path:
    path = data / WHERE[target]
    path.write_bytes(content)
    return path


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
