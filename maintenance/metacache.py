"""The metadata cache (.root_images/.meta-cache.json): each image's parsed YAML document
as JSON, keyed by its file's identity (inode, size, mtime, ctime; every rewrite of a
metadata file is a rename, so a new inode). JSON reads in a fraction of YAML's time: a
status of 100 restore points, whose metadata lists their whole stacks, parses ~7,500 YAML
scalars. Derived data only: a missing, stale or unreadable cache is ignored and rewritten,
and nothing but this cache reads it (Store.read_meta asks it first).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from .records import META_EXT

log = logging.getLogger(__name__)


class MetaCache:
    """The cache file at ``path``, read at most once, written back by ``save``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[str, object] | None = None
        self._dirty = False

    def _load(self) -> dict[str, object]:
        if self._entries is None:
            self._entries = {}
            with contextlib.suppress(OSError, ValueError):
                doc = json.loads(self.path.read_bytes())
                if isinstance(doc, dict) and doc.get("v") == 1 and \
                        isinstance(doc.get("metas"), dict):
                    self._entries = doc["metas"]
        return self._entries

    def get(self, name: str, key: tuple[int, ...] | None) -> object | None:
        """The document cached for this version (``key``) of an image's metadata file."""
        if key is None:
            return None
        entry = self._load().get(name)
        if isinstance(entry, dict) and entry.get("key") == list(key[1:]):
            return entry.get("doc")
        return None

    def put(self, name: str, key: tuple[int, ...] | None, doc: object) -> None:
        if key is None:
            return
        try:
            if json.loads(json.dumps(doc)) != doc:  # only what JSON gives back unchanged
                return
        except (TypeError, ValueError, RecursionError):
            return
        self._load()[name] = {"key": list(key[1:]), "doc": doc}
        self._dirty = True

    def save(self) -> None:
        """Write the cache if this process parsed any metadata file, keeping only images
        that still have one. Best effort: a read-only store is left as it is."""
        if not self._dirty or self._entries is None:
            return
        self._dirty = False
        root = self.path.parent
        live = {p.name[:-len(META_EXT)] for p in root.glob(f"*{META_EXT}")}
        doc = {"v": 1, "metas": {n: e for n, e in self._entries.items() if n in live}}
        tmp = root / f"{self.path.name}.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")))
            os.replace(tmp, self.path)
        except OSError as e:
            log.debug("metadata cache not written: %s", e)
            with contextlib.suppress(OSError):
                tmp.unlink()
