"""The image metadata cache (.root_images/.meta-cache.json): derived data that a status
writes and the next process reads instead of the YAML, never trusted over the YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maintenance import store as storemod
from maintenance.engine import Engine
from maintenance.errors import StoreError
from maintenance.model import Kind
from maintenance.store import META_CACHE, Store
from maintenance.wording import notice_text


@pytest.fixture
def store(engine: Engine, root_ns: Path) -> Engine:
    tree = root_ns / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("cache\n")
    engine.init(source_dir=tree)
    for i in range(3):
        (engine.store.upper / f"f{i}").write_text(f"{i}\n")
        engine.create(Kind.INCREMENTAL, name=f"p{i}", description=f"point {i}")
    return engine


def fresh(eng: Engine) -> Engine:
    """Another process's view of the same store (no in-memory cache)."""
    return Engine(eng.data_dir, eng.run_dir)


def test_status_writes_the_cache_and_the_next_reader_uses_it(
        store: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = store.store.root / META_CACHE
    before = store.status()
    doc = json.loads(cache.read_text())
    assert doc["v"] == 1 and sorted(doc["metas"]) == ["base", "p0", "p1", "p2"]
    assert doc["metas"]["p2"]["doc"]["stack"] == ["base", "p0", "p1"]
    parsed: list[str] = []
    real = storemod.load_yaml

    def counting(text: str) -> object:
        if "\nsha256: " in text:  # an image's metadata
            parsed.append(text)
        return real(text)

    monkeypatch.setattr(storemod, "load_yaml", counting)
    other = fresh(store)
    after = other.status()
    assert parsed == []  # the next process parses no image metadata
    assert after.stack == before.stack
    assert [e.description for e in after.stack[1:]] == ["point 0", "point 1", "point 2"]


def test_a_rewritten_metadata_file_is_read_again(store: Engine) -> None:
    store.status()
    other = fresh(store)
    meta = other.store.read_meta("p1")
    other.store.write_meta(meta.__class__(**{**meta.__dict__, "description": "renamed"}))
    third = fresh(store)
    assert third.store.read_meta("p1").description == "renamed"
    third.status()
    assert json.loads((store.store.root / META_CACHE).read_text())[
        "metas"]["p1"]["doc"]["description"] == "renamed"


def test_the_cache_never_hides_a_damaged_metadata_file(store: Engine) -> None:
    store.status()
    path = store.store.meta_path("p0")
    path.write_text("format: 1\nname: [unclosed\n")  # a new version of the file
    other = fresh(store)
    with pytest.raises(StoreError, match="unreadable metadata"):
        other.store.read_meta("p0")
    assert any("p0" in notice_text(n) for n in other.status().notices)


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"v": 2, "metas": {}}',
                                     b'{"v": 1, "metas": []}', b"\xff\xfe",
                                     b'{"v": 1, "metas": {"p0": {"key": 5, "doc": 1}}}'])
def test_a_bad_cache_is_ignored_and_rewritten(store: Engine, content: bytes) -> None:
    cache = store.store.root / META_CACHE
    cache.write_bytes(content)
    other = fresh(store)
    assert [e.name for e in other.status().stack] == ["base", "p0", "p1", "p2"]
    assert sorted(json.loads(cache.read_text())["metas"]) == ["base", "p0", "p1", "p2"]


def test_a_forged_cache_entry_with_a_stale_key_is_not_used(store: Engine) -> None:
    store.status()
    cache = store.store.root / META_CACHE
    doc = json.loads(cache.read_text())
    doc["metas"]["p1"]["doc"]["description"] = "forged"
    doc["metas"]["p1"]["key"][0] += 1  # another inode
    cache.write_text(json.dumps(doc))
    assert fresh(store).store.read_meta("p1").description == "point 1"


def test_deleted_images_leave_the_cache(store: Engine) -> None:
    store.status()
    store.rollback("p1")
    (store.store.upper / "g").write_text("g\n")
    store.create(Kind.INCREMENTAL, name="q")  # roottab.prev no longer names p2
    store.delete("p2")
    store.status()
    other = Store(store.data_dir)
    assert "p2" not in json.loads((other.root / META_CACHE).read_text())["metas"]
    assert META_CACHE not in [n for n in store.store.image_names()]
