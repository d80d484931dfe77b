"""``ibi verify``: every image of the stack (or the store) checksummed against its
metadata, and the kernels they boot checked.

A function of the :class:`~maintenance.engine.Engine`, which calls it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from . import kernels, kernelstore, squash
from .errors import NotFound, StoreError
from .model import KernelRef, Kind, Progress, ProgressFn, VerifyItem, VerifyReport

if TYPE_CHECKING:
    from .engine import Engine


def verify(eng: Engine, *, all_images: bool = False,
           progress: ProgressFn | None = None) -> VerifyReport:
    """Checksum every image of the stack (or the store) against its metadata."""
    st = eng.store
    st.require()
    try:
        names = st.read_roottab()
    except StoreError as e:
        return VerifyReport((VerifyItem("roottab", False, str(e)),))
    if all_images:
        names = [*names, *(n for n in st.image_names() if n not in names)]
    items = []
    for n in names:
        items.append(_verify_one(eng, n, progress))
    # the kernels those images boot (each checked once), and the layer's
    refs: dict[str, KernelRef] = {}
    for n in names:
        meta = st.try_meta(n)
        for k in meta.kernels if meta else ():
            refs.setdefault(k.id, k)
    with contextlib.suppress(StoreError):
        for k in kernels.layer_kernels(st, st.read_roottab()) or ():
            refs.setdefault(k.id, k)
    for k in refs.values():
        if progress:
            progress(Progress("verifying", 0, 0, f"Linux {k.version}"))
        problem = kernelstore.check(st, k)
        items.append(VerifyItem(f"kernel {k.id}", problem is None, problem))
    return VerifyReport(tuple(items))


def _verify_one(eng: Engine, name: str, progress: ProgressFn | None) -> VerifyItem:
    st = eng.store
    if not st.has_image(name):
        return VerifyItem(name, False, "image file is missing")
    try:
        meta = st.read_meta(name)
    except (NotFound, StoreError) as e:
        return VerifyItem(name, False, str(e))
    size = st.image_path(name).stat().st_size
    if size != meta.size:
        return VerifyItem(name, False, f"size {size} differs from metadata {meta.size}")
    if meta.kind is Kind.INCREMENTAL:
        missing = [n for n in meta.stack if not st.has_image(n)]
        if missing:
            return VerifyItem(name, False, f"parent image(s) missing: {' '.join(missing)}")
    digest = squash.sha256(st.image_path(name), progress)
    if digest != meta.sha256:
        return VerifyItem(name, False, "checksum mismatch: the image is corrupted")
    return VerifyItem(name, True)
