"""The ibi command as a user meets it: one-line errors, exit codes, --json, --help."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fstree import build_base


def ibi(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maintenance.cli", *args], capture_output=True,
                          text=True, input=input, stdin=None if input else subprocess.DEVNULL,
                          cwd=Path(__file__).parent.parent)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in p.stderr, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if not ln.startswith("ibi: hint:")]
    assert len(lines) == 1, p.stderr
    return lines[0]


def test_help_documents_every_command() -> None:
    p = ibi("--help")
    assert p.returncode == 0
    for cmd in ("init", "status", "mount", "umount", "review", "create", "restore", "rollback",
                "delete", "verify", "recover", "purge", "menu", "exit status"):
        assert cmd in p.stdout
    sub = ibi("create", "--help")
    assert "--incremental" in sub.stdout and "--full" in sub.stdout and "--json" in sub.stdout


def test_missing_store_is_one_line(tmp_path: Path) -> None:
    p = ibi("status", "--data", str(tmp_path))
    assert p.returncode == 1
    assert "no ibi store" in one_line_error(p)
    assert "hint: create one with: ibi init" in p.stderr
    p = ibi("status", "--data", str(tmp_path / "nope"))
    assert p.returncode == 1 and "does not exist" in one_line_error(p)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    p = ibi("frobnicate")
    assert p.returncode == 2 and "Traceback" not in p.stderr
    p = ibi("create", "--data", str(tmp_path))
    assert p.returncode == 2 and "one of the arguments --incremental --full" in p.stderr


@pytest.fixture
def cli_store(root_ns: Path) -> Path:
    tree = root_ns / "tree"
    build_base(tree)
    data = root_ns / "data"
    data.mkdir()
    p = ibi("init", "--data", str(data), "--from", str(tree), "-m", "cli base", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["kind"] == "base"
    return data


def test_status_json_and_text(cli_store: Path) -> None:
    (cli_store / "layer/upper/etc").mkdir()
    (cli_store / "layer/upper/etc/hostname").write_text("x\n")
    p = ibi("status", "--data", str(cli_store), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert [e["name"] for e in doc["stack"]] == ["base"]
    assert doc["stack"][0]["chain_ok"] is True and doc["ok"] is True
    assert doc["layer"]["changed"] == 1 and doc["disk"]["free"] > 0
    text = ibi("status", "--data", str(cli_store)).stdout
    assert "base" in text and "writable layer" in text and "Data partition" in text


def test_bad_name_and_empty_layer_are_one_line(cli_store: Path) -> None:
    p = ibi("create", "--data", str(cli_store), "--incremental", "--name", "a/b")
    assert p.returncode == 2 and "bad image name" in one_line_error(p)
    p = ibi("create", "--data", str(cli_store), "--incremental")
    assert p.returncode == 2 and "empty" in one_line_error(p)


def test_destructive_actions_need_confirmation(cli_store: Path) -> None:
    (cli_store / "layer/upper/junk").write_text("x")
    p = ibi("restore", "--data", str(cli_store))
    assert p.returncode == 1 and "--yes" in one_line_error(p)
    assert (cli_store / "layer/upper/junk").exists()
    p = ibi("restore", "--data", str(cli_store), "--yes", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["discarded"]["changed"] == 1
    assert not (cli_store / "layer/upper/junk").exists()


def test_create_verify_corrupt_exits_3(cli_store: Path) -> None:
    (cli_store / "layer/upper/new").write_text("x")
    p = ibi("create", "--data", str(cli_store), "--incremental", "--name", "inc", "-q")
    assert p.returncode == 0, p.stderr
    assert ibi("verify", "--data", str(cli_store)).returncode == 0
    img = cli_store / ".root_images/inc.sqfs"
    data = bytearray(img.read_bytes())
    data[len(data) // 2] ^= 0xFF
    img.write_bytes(bytes(data))
    p = ibi("verify", "--data", str(cli_store), "--json")
    assert p.returncode == 3
    bad = [i for i in json.loads(p.stdout)["items"] if not i["ok"]]
    assert [i["name"] for i in bad] == ["inc"]


def test_mount_review_umount_from_cli(cli_store: Path, root_ns: Path) -> None:
    mnt = root_ns / "mnt"
    mnt.mkdir()
    run = ["--run-dir", str(root_ns / "run")]
    assert ibi("mount", "--data", str(cli_store), str(mnt), *run).returncode == 0
    assert (mnt / "etc/hostname").read_text() == "base-host\n"
    p = ibi("mount", "--data", str(cli_store), str(mnt), *run)
    assert p.returncode == 1 and "busy: the writable layer is in use" in one_line_error(p)
    other = root_ns / "other"
    other.mkdir()
    p = ibi("mount", "--data", str(cli_store), str(other), *run)  # one writer per layer
    assert p.returncode == 1 and f"in use by the overlay on {mnt}" in one_line_error(p)
    assert not os.path.ismount(other)
    assert ibi("umount", str(mnt), *run).returncode == 0
    assert not os.path.ismount(mnt)
    assert ibi("review", "--data", str(cli_store), "base", str(mnt), *run).returncode == 0
    assert (mnt / "etc/hostname").exists()
    assert ibi("umount", str(mnt), *run).returncode == 0
    p = ibi("umount", str(mnt), *run)
    assert p.returncode == 1 and "nothing of ibi" in one_line_error(p)


def test_unknown_options_are_refused_except_for_the_menu(tmp_path: Path) -> None:
    p = ibi("status", "--data", str(tmp_path), "--bogus")
    assert p.returncode == 2 and "unrecognized arguments: --bogus" in p.stderr
    from maintenance.cli import build_parser

    args, extra = build_parser().parse_known_args(["menu", "--data", "D", "--decision", "F"])
    assert args.cmd == "menu" and extra == ["--decision", "F"]
