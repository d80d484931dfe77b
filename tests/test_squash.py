"""mksquashfs progress streams while it works (needs squashfs-tools, not root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from maintenance.model import Progress
from maintenance.squash import mksquashfs, sha256


def test_progress_arrives_while_squashing(tmp_path: Path) -> None:
    if not shutil.which("mksquashfs"):
        if os.environ.get("IBI_REQUIRE_ALL") == "1":
            pytest.fail("mksquashfs missing (apt-get install squashfs-tools)")
        pytest.skip("mksquashfs missing (apt-get install squashfs-tools)")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(160):
        (src / f"f{i}").write_bytes(os.urandom(1 << 18) + b"a" * (1 << 18))
    dest = tmp_path / "out.sqfs"
    sizes: list[int] = []
    reports: list[Progress] = []

    def on(p: Progress) -> None:
        reports.append(p)
        sizes.append(dest.stat().st_size if dest.exists() else 0)

    mksquashfs(src, dest, level=19, progress=on, label="img")
    final = dest.stat().st_size
    assert len({r.done for r in reports}) >= 3, reports
    assert reports[-1].done == reports[-1].total and reports[0].message == "img"
    # through a pipe the bar would only arrive once mksquashfs exited, image complete
    assert sizes[0] < final, "the first progress report came only after the image was done"
    assert len(sha256(dest)) == 64
