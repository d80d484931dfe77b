"""Pure logic: names, roottab and preserve formats, metadata, compression options."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from maintenance.errors import BadName, CommandError, StoreError, UsageError
from maintenance.model import ImageMeta, Kind, Progress, to_jsonable
from maintenance.records import (
    check_name,
    meta_from_yaml,
    meta_to_yaml,
    parse_preserve,
    parse_roottab,
    render_roottab,
)
from maintenance.squash import compression_args


@pytest.mark.parametrize("name", ["base", "2026-11-22_inc.1", "A", "x" * 64])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["", ".hidden", "-opt", "a/b", "..", "a b", "é", "x" * 65,
                                  "a.sqfs", "a.yaml", "a.tmp", "a\nb"])
def test_bad_names(name: str) -> None:
    with pytest.raises(BadName):
        check_name(name)


def test_roottab_round_trip_with_comments() -> None:
    text = "# my stack\n\nbase   # the base\n  inc-1\n#inc-2\n"
    assert parse_roottab(text) == ["base", "inc-1"]
    assert parse_roottab(render_roottab(["base", "inc-1"])) == ["base", "inc-1"]


@pytest.mark.parametrize("text,msg", [("", "no image"), ("# only\n", "no image"),
                                      ("base\nbase\n", "twice"), ("base\n../x\n", "line 2")])
def test_roottab_errors(text: str, msg: str) -> None:
    with pytest.raises(StoreError, match=msg):
        parse_roottab(text)


def test_preserve_parsing() -> None:
    assert parse_preserve("# c\n/etc/hostname\n/etc//x/\n") == ["/etc/hostname", "/etc/x"]
    with pytest.raises(StoreError):
        parse_preserve("etc/relative\n")
    with pytest.raises(StoreError):
        parse_preserve("/etc/../root\n")


def test_metadata_round_trip() -> None:
    meta = ImageMeta("inc", Kind.INCREMENTAL, dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
                     "ab" * 32, 4096, "a ✓ note", "base", ("base",), source_layer="layer1",
                     source_stamp=1_700_000_000_123_456_789, compressor="xz")
    assert meta_from_yaml(meta_to_yaml(meta), "x.yaml") == meta
    assert "created: '2026-01-02T03:04:05Z'" in meta_to_yaml(meta)


@pytest.mark.parametrize("text", ["", "- a list", "name: x\nkind: weird\ncreated: 2026-01-01\n"
                                  "sha256: a\nsize: 1\n", ": : :"])
def test_bad_metadata_is_a_store_error(text: str) -> None:
    with pytest.raises(StoreError, match="unreadable metadata"):
        meta_from_yaml(text, "x.yaml")


def test_compression_args() -> None:
    assert compression_args("zstd", None) == ["-comp", "zstd", "-Xcompression-level", "3"]
    assert compression_args("xz", None) == ["-comp", "xz"]
    assert compression_args("gzip", 9)[-1] == "9"
    for comp, level in (("zstd", 23), ("xz", 3), ("brotli", None)):
        with pytest.raises(UsageError):
            compression_args(comp, level)


def test_command_error_carries_last_stderr_line() -> None:
    e = CommandError(["mount", "-t", "x"], 32, "warning\nmount: wrong fs type\n\n")
    assert str(e) == "mount failed (exit 32): mount: wrong fs type"
    assert e.stderr.startswith("warning")


def test_progress_fraction_and_json() -> None:
    assert Progress("squashing", 5, 10).fraction == 0.5
    assert Progress("x", 5, 0).fraction is None
    meta = ImageMeta("b", Kind.BASE, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), "00", 1)
    doc = json.loads(json.dumps(to_jsonable(meta)))
    assert doc["kind"] == "base" and doc["created"].startswith("2026-01-01")
