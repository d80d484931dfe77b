"""The fields of the store's YAML documents, each checked as it is read (a string, a size,
a date and time, a digest, a line of free text) and the date stamp written back.

maintenance/records.py (image metadata, kernels) and maintenance/bootrecords.py (pending,
policy, trial, fallback) read their documents field by field with these. A field that is
missing or of the wrong type raises ValueError naming it; the caller turns it into one
StoreError line naming the document.
"""

from __future__ import annotations

import datetime as dt
import re

_HEX = re.compile(r"^[0-9a-f]{1,128}$")


def str_field(doc: dict[str, object], key: str, default: str | None = None) -> str:
    v = doc.get(key, default)
    if not isinstance(v, str):
        raise ValueError(f"{key!r} is not a string" if key in doc else f"no {key!r}")
    return v


def opt_str_field(doc: dict[str, object], key: str) -> str | None:
    v = doc.get(key)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"{key!r} is not a string")
    return v


def size_field(v: object, key: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 63:
        raise ValueError(f"{key!r} is not a size")
    return v


def bool_field(doc: dict[str, object], key: str) -> bool:
    v = doc.get(key, False)
    if not isinstance(v, bool):
        raise ValueError(f"{key!r} is not true or false")
    return v


def when_field(doc: dict[str, object], key: str) -> dt.datetime:
    v = doc.get(key)
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    if not isinstance(v, dt.datetime):
        raise ValueError(f"{key!r} is not a date and time")
    # in UTC, as written back (a far-off offset that leaves the calendar raises here)
    return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def line_field(text: str, limit: int = 300) -> str:
    """Free text shown in one line (status, the menu): control characters and line breaks
    become spaces; no lone surrogates."""
    text = "".join(" " if (ord(c) < 32 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029")
                   else c for c in text)
    text = " ".join(text.split())[:limit]
    return text.encode("utf-8", "replace").decode("utf-8")


def utc_stamp(when: dt.datetime) -> str:
    """UTC to the second; isoformat pads the year to four digits (strftime's %Y does not,
    so year 999 would not read back)."""
    return when.astimezone(dt.UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def hex_field(v: str, key: str, empty: bool = False) -> str:
    if (v or not empty) and not _HEX.fullmatch(v):
        raise ValueError(f"{key!r} is not a hexadecimal digest")
    return v
