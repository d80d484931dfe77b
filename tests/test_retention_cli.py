"""The commands of the retention policy (ibi pin, unpin, prune: prunecli.py) on real stores,
as cli.main runs them: their help, the one-line errors, the dry run, the confirmation and
--json (as tests/test_retention.py; kit: tests/retention_kit.py)."""

from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from maintenance import cli, prunecli
from maintenance.engine import Engine
from maintenance.errors import IbiError
from tests import retention_kit
from tests.retention_kit import images

# the fixture, by name: pytest finds it in this module
chain = retention_kit.chain


# ---------------------------------------------------------------------- the commands

def parser() -> argparse.ArgumentParser:
    """The commands as cli.build_parser registers them (the same common options)."""
    top = argparse.ArgumentParser(prog="ibi")
    sub = top.add_subparsers(dest="cmd", required=True)

    def add(name: str, help: str, desc: str, json_out: bool = False
            ) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=textwrap.dedent(desc),
                              parents=[cli._common(json_out)],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    prunecli.add_parser(add)
    return top


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def ibi(chain: Engine, root_ns: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """Run a command as cli.main does (one-line error, the exit status): (rc, out, err)."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal to ask on

    def run(*argv: str) -> tuple[int, str, str]:
        args = parser().parse_args([*argv, "--data", str(chain.data_dir),
                                    "--run-dir", str(root_ns / "run")])
        try:
            rc = prunecli.run(Engine(args.data, args.run_dir), args)
        except IbiError as e:
            print(f"ibi: error: {e}", file=sys.stderr)
            rc = e.exit_code
        out, err = capsys.readouterr()
        return rc, out, err
    yield run


def help_text(cmd: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        parser().parse_args([cmd, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_cli_help_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("pin", "unpin", "prune"):
        text = help_text(cmd, capsys)
        assert "exit status" in text and "examples" in text and "--json" in text
    text = help_text("prune", capsys)
    for opt in ("--dry-run", "--keep-last", "--keep-days", "--yes", "policy",
                "pinned", "roottab.prev", "PRUNE"):
        assert opt in text


def test_cli_pin_and_unpin(ibi: Run, chain: Engine) -> None:
    rc, out, err = ibi("pin", "inc1", "inc2")
    assert rc == 0 and err == ""
    assert out.splitlines() == ["pinned inc1: ibi prune and ibi delete keep it",
                                "pinned inc2: ibi prune and ibi delete keep it"]
    assert chain.store.read_meta("inc2").pinned
    rc, out, _ = ibi("pin", "inc1")
    assert rc == 0 and out == "inc1 was already pinned: nothing changed\n"
    rc, out, _ = ibi("unpin", "inc2", "--json")
    assert rc == 0 and json.loads(out) == [{"name": "inc2", "pinned": False, "changed": True}]
    assert not chain.store.read_meta("inc2").pinned
    rc, out, err = ibi("pin", "nope")
    assert rc == 1 and out == ""
    assert err == "ibi: error: no image named 'nope' in the store\n"
    rc, _, err = ibi("unpin", "bad/name")
    assert rc == 2 and len(err.splitlines()) == 1


def test_cli_prune_dry_run_confirmation_and_json(ibi: Run, chain: Engine,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    st = chain.store
    names = images(st)
    rc, out, err = ibi("prune", "--keep-last", "-1")
    assert rc == 2 and out == "" and err == "ibi: error: --keep-last must be 0 or more (not -1)\n"
    rc, out, _ = ibi("prune", "--dry-run", "--keep-last", "0", "--keep-days", "0")
    assert rc == 0
    assert "To delete (2 restore points" in out and "(--dry-run: nothing was deleted)" in out
    lines = out.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.split()[:1] == ["inc2"])
    assert lines[first + 1].split()[0] == "inc1" and "80 days old" in lines[first]
    assert any("f1" in ln and "in the active stack" in ln for ln in lines)
    rc, out, _ = ibi("prune", "--dry-run", "--json", "--keep-last", "0", "--keep-days", "0")
    doc = json.loads(out)
    assert rc == 0 and doc["dry_run"] is True
    assert [i["name"] for i in doc["delete"]] == ["inc2", "inc1"]
    assert {i["name"] for i in doc["keep"]} == {"base", "f1", "inc3"}
    assert images(st) == names

    rc, out, err = ibi("prune", "--keep-last", "0", "--keep-days", "0")  # no terminal
    assert rc == 1 and err == "ibi: error: prune needs confirmation: add --yes\n"
    assert images(st) == names

    # on a terminal: it lists what goes, and asks
    prompts: list[str] = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "no")
    rc, out, err = ibi("prune", "--keep-last", "0", "--keep-days", "0")
    assert rc == 1 and "cancelled" in err and images(st) == names
    assert prompts == ["Type PRUNE to go on, anything else to cancel: "]
    assert "inc2" in out and "80 days old" in out and "Kept: 3 images" in out

    def unpin_meanwhile(prompt: str) -> str:  # the store changes while the user reads
        chain.pin("inc1", False)
        return "PRUNE"
    chain.pin("inc1")
    monkeypatch.setattr("builtins.input", unpin_meanwhile)
    rc, out, err = ibi("prune", "--keep-last", "0", "--keep-days", "0")
    assert rc == 1 and "would now also delete inc1; nothing was deleted" in err
    assert images(st) == names

    monkeypatch.setattr("builtins.input", lambda prompt: "PRUNE")
    rc, out, err = ibi("prune", "--keep-last", "0", "--keep-days", "0")
    assert rc == 0, err
    assert out.splitlines()[-1].startswith("deleted inc2, inc1: freed ")
    assert images(st) == ["base", "f1", "inc3"]
    rc, out, _ = ibi("prune", "--yes", "--json")
    assert rc == 0 and json.loads(out)["delete"] == [] and json.loads(out)["dry_run"] is False
    rc, out, _ = ibi("prune")  # nothing to delete: nothing to confirm
    assert rc == 0 and "Nothing to delete" in out


def test_cli_prune_yes(ibi: Run, chain: Engine) -> None:
    chain.pin("inc2")
    rc, out, err = ibi("prune", "--yes", "--keep-last", "0", "--keep-days", "0", "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["delete"] == [] and {"name": "inc2", "reason": "pinned"}.items() <= \
        next(i for i in doc["keep"] if i["name"] == "inc2").items()
    chain.pin("inc2", False)
    rc, out, err = ibi("prune", "-y", "--keep-last", "0", "--keep-days", "0")
    assert rc == 0 and out.startswith("deleted inc2, inc1: freed ")
    assert images(chain.store) == ["base", "f1", "inc3"]
