"""Build file trees with every kind of entry, and snapshot a tree for exact comparison
(type, content, mode, owner, xattrs, link target, device numbers, hard-link groups,
sparse holes)."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def build_base(root: Path) -> None:
    """A small root tree exercising what a real one has."""
    for d in ("etc/app", "usr/bin", "usr/lib/mod", "var/lib", "home", "dev", "srv/data/sub",
              "opt/old/deep", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "etc/hostname").write_text("base-host\n")
    (root / "etc/app/main.conf").write_text("level = 1\n")
    (root / "etc/app/extra.conf").write_text("extra = yes\n")
    (root / "usr/bin/tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(root / "usr/bin/tool", 0o755)
    (root / "usr/bin/setuid").write_text("x")
    os.chmod(root / "usr/bin/setuid", 0o4755)
    (root / "usr/lib/mod/a.so").write_bytes(os.urandom(5000))
    (root / "usr/lib/mod/b.so").write_bytes(b"\0" * 3000)
    os.link(root / "usr/lib/mod/a.so", root / "usr/lib/mod/a-hardlink.so")
    os.symlink("tool", root / "usr/bin/tool-link")
    os.symlink("/nonexistent/target", root / "usr/bin/dangling")
    (root / "var/lib/empty").touch()
    with open(root / "var/lib/sparse", "wb") as f:
        f.seek(8 << 20)
        f.write(b"end")
    os.mknod(root / "dev/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "dev/sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mkfifo(root / "var/lib/fifo")
    (root / "srv/data/owned").write_text("owned by 1234:5678\n")
    os.chown(root / "srv/data/owned", 1234, 5678)
    os.chown(root / "srv/data", 1234, 5678)
    os.setxattr(root / "srv/data/owned", "user.tag", b"base-value")
    (root / "srv/data/sub/file").write_text("in sub\n")
    (root / "opt/old/deep/file").write_text("old deep\n")
    (root / "opt/old/top").write_text("old top\n")
    (root / "home/base-user").write_text("hidden by the /home bind\n")
    os.chmod(root / "tmp", 0o1777)


def snapshot(root: Path, skip: tuple[str, ...] = ("home",)) -> dict[str, Any]:
    """Every entry under ``root`` described exactly; ``skip`` top-level names are ignored
    except for their own entry."""
    out: dict[str, Any] = {}
    inodes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        top = rel_dir == "."
        if top:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in sorted(dirnames + filenames) + (list(skip) if top else []):
            p = os.path.join(dirpath, name)
            if not os.path.lexists(p):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(p)
            d: dict[str, Any] = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    d["sha"] = hashlib.sha256(f.read()).hexdigest()
                d["size"] = st.st_size
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    d["link_group"] = inodes.setdefault(key, rel)
            elif stat.S_ISLNK(st.st_mode):
                d["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                d["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISLNK(st.st_mode):
                d["xattrs"] = {k: os.getxattr(p, k, follow_symlinks=False)
                               for k in _xattr_names(p) if k.startswith("user.")}
            out[rel] = d
    return out


def _xattr_names(path: str) -> list[str]:
    """The names of a file's extended attributes; none where the file system stores none
    (a directory of a squashfs image without an xattr table says EOPNOTSUPP)."""
    try:
        return sorted(os.listxattr(path, follow_symlinks=False))
    except OSError as e:
        if e.errno != errno.EOPNOTSUPP:
            raise
        return []


def apply_changes(root: Path) -> None:
    """A change set touching every hard case for an incremental layer."""
    (root / "etc/hostname").write_text("changed-host\n")  # modify
    (root / "etc/app/extra.conf").unlink()  # delete a file -> whiteout
    (root / "etc/new.conf").write_text("new\n")  # add
    os.chmod(root / "usr/bin/tool", 0o700)  # metadata-only change (copy-up)
    os.chown(root / "usr/lib/mod/b.so", 42, 43)
    os.setxattr(root / "srv/data/owned", "user.tag", b"changed")  # xattr change
    os.setxattr(root / "etc/new.conf", "user.new", b"1")
    # rename a directory that comes from a lower: EXDEV with redirect_dir=off, so copy+delete
    import shutil

    shutil.move(str(root / "opt/old"), str(root / "opt/renamed"))
    # replace a directory: delete it and make it again -> opaque
    shutil.rmtree(root / "srv/data/sub")
    (root / "srv/data/sub").mkdir()
    (root / "srv/data/sub/only-new").write_text("fresh\n")
    # hard links, symlinks, device nodes, empty and sparse files made in the layer
    (root / "var/lib/newfile").write_text("linked\n")
    os.link(root / "var/lib/newfile", root / "var/lib/newfile-link")
    os.symlink("../etc/new.conf", root / "var/lib/conf-link")
    os.mknod(root / "dev/zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    (root / "var/lib/new-empty").touch()
    with open(root / "var/lib/new-sparse", "wb") as f:
        f.seek(4 << 20)
        f.write(b"tail")
    os.unlink(root / "usr/bin/dangling")
    os.symlink("tool", root / "usr/bin/dangling")  # replace a symlink's target
