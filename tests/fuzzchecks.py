"""The fuzz tests' strategies and checks (for tests/test_fuzz.py and tests/test_fuzz_boot.py;
not collected itself): what a damaged, hand-edited or wrongly typed store file may hold
(``file_bytes``, built on the valid seeds of tests/fuzzkit.py), and what a reader may answer:
``read`` calls it with a time limit and checks an IbiError (one printable line naming the
file); the check_* functions check a value it returned.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import signal
import traceback
import unicodedata
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import yaml
from hypothesis import strategies as st

from maintenance import state as statemod
from maintenance.errors import IbiError
from maintenance.model import ImageMeta, KernelRef, Kind
from maintenance.operators import RegistryOperator
from maintenance.records import check_kernel_id, check_name
from tests.fuzzkit import DOCS, HANG_SECONDS, SEEDS

T = TypeVar("T")


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
