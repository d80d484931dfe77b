"""The engine side of the menu's password (maintenance/auth.py) and ``ibi passwd``: which
password is asked (root's from the layer's or the stack's shadow, or the maintenance
password), hashes made by the real libxcrypt (and by openssl), a whiteout in the layer,
fail-closed errors in one line, and the maintenance password file (scrypt, mode 0600)."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maintenance import auth
from maintenance.auth import Auth, AuthError, hash_root_password
from maintenance.errors import IbiError, UsageError
from maintenance.store import Store
from tests.menu_fakes import password_system, shadow_line

REPO = Path(__file__).resolve().parent.parent
PW = "Tr0ub4dor&3"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    """Root password hashes of PW as passwd(1) writes them, made by libxcrypt."""
    return {prefix: hash_root_password(PW, prefix) for prefix in ("$y$", "$6$", "$5$", "$2b$")}


def layer_shadow(a: Auth, text: str | None = None) -> Path:
    etc = a.store.upper / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    path = etc / "shadow"
    if text is not None:
        path.write_text(text)
    return path


def whiteout(path: Path) -> None:
    """What overlayfs leaves in the upper when a file of a lower is deleted."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a whiteout (a 0/0 character device)")
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


# ---------------------------------------------------------------------- root's password

@pytest.mark.parametrize("prefix", ["$y$", "$6$", "$5$", "$2b$"])
def test_roots_hash_is_checked_with_libcrypt(tmp_path: Path, hashes: dict[str, str],
                                             prefix: str) -> None:
    h = hashes[prefix]
    assert h.startswith(prefix) and len(h) > 30
    a = password_system(tmp_path, h)
    guard = a.required()
    assert guard is not None and guard.kind == "root"
    assert guard.source == tmp_path / "system" / "etc" / "shadow"
    assert h not in repr(guard)  # the hash stays out of logs and tracebacks
    assert a.check(guard, PW)
    for wrong in ("", PW[:-1], PW + "x", PW.upper(), PW + "\0rest", "x" * 600):
        assert not a.check(guard, wrong), wrong


def test_a_sha512_hash_made_by_openssl(tmp_path: Path) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed (apt-get install openssl)")
    h = subprocess.run(["openssl", "passwd", "-6", "-salt", "Zq9ibiTest", PW],
                       capture_output=True, text=True, check=True).stdout.strip()
    assert h.startswith("$6$Zq9ibiTest$")
    a = password_system(tmp_path, h)
    guard = a.required()
    assert guard is not None and a.check(guard, PW) and not a.check(guard, "nope")


@pytest.mark.parametrize("field", ["", "*", "!", "!!", "!*", "*LK*", "!$y$j9T$x$y"])
def test_empty_or_locked_root_asks_for_nothing(tmp_path: Path, field: str) -> None:
    a = password_system(tmp_path, field)
    a.libcrypt = "libcrypt-not-here.so.9"  # never needed when there is nothing to ask
    assert a.required() is None


def test_no_shadow_or_no_root_line_asks_for_nothing(tmp_path: Path) -> None:
    a = password_system(tmp_path, None)
    assert a.required() is None
    (tmp_path / "system" / "etc" / "shadow").write_text("daemon:*:20424:0:99999:7:::\n")
    assert a.required() is None


def test_the_layers_shadow_wins_over_the_stacks(tmp_path: Path,
                                                hashes: dict[str, str]) -> None:
    stack = hashes["$y$"]
    layer = hash_root_password("layer-pw", "$6$")
    a = password_system(tmp_path, stack)
    path = layer_shadow(a, shadow_line(layer))
    guard = a.required()
    assert guard is not None and guard.source == path
    assert a.check(guard, "layer-pw") and not a.check(guard, PW)
    path.write_text(shadow_line(""))  # the running system emptied root's password
    assert a.required() is None
    path.write_text(shadow_line("!" + stack))  # ... or locked it
    assert a.required() is None


def test_a_whiteout_in_the_layer_falls_back_to_the_stack(tmp_path: Path,
                                                         hashes: dict[str, str]) -> None:
    a = password_system(tmp_path, hashes["$y$"])
    path = layer_shadow(a)
    whiteout(path)
    guard = a.required()
    assert guard is not None and guard.source == tmp_path / "system" / "etc" / "shadow"
    assert a.check(guard, PW)
    path.unlink()
    path.parent.rmdir()
    whiteout(path.parent)  # the layer deleted all of /etc
    guard = a.required()
    assert guard is not None and guard.source == tmp_path / "system" / "etc" / "shadow"


def test_odd_layer_files_fail_closed(tmp_path: Path, hashes: dict[str, str]) -> None:
    a = password_system(tmp_path, "")
    path = layer_shadow(a)
    path.symlink_to("/etc/shadow")
    with pytest.raises(AuthError, match=r"shadow is not a regular file"):
        a.required()
    path.unlink()
    path.parent.rmdir()
    path.parent.symlink_to(tmp_path / "system" / "etc")
    with pytest.raises(AuthError, match=r"etc in the writable layer is not a directory"):
        a.required()


def test_an_unreadable_shadow_fails_closed_in_one_line(tmp_path: Path) -> None:
    a = password_system(tmp_path, None)
    (tmp_path / "system" / "etc" / "shadow").mkdir()  # read() fails: EISDIR
    with pytest.raises(AuthError) as e:
        a.required()
    assert str(e.value).startswith(f"cannot read {tmp_path}/system/etc/shadow: ")
    assert "\n" not in str(e.value) and "stay locked" in (e.value.hint or "")
    assert isinstance(e.value, IbiError)


def test_a_missing_libcrypt_fails_closed(tmp_path: Path, hashes: dict[str, str]) -> None:
    a = password_system(tmp_path, hashes["$y$"])
    a.libcrypt = "libcrypt-not-here.so.9"
    guard = a.required()
    assert guard is not None  # it is known that a password is needed ...
    with pytest.raises(AuthError, match=r"^cannot check root's password: "
                                        r"libcrypt-not-here.so.9 cannot be loaded") as e:
        a.check(guard, PW)  # ... but not whether this one is right: locked
    assert "\n" not in str(e.value) and "libcrypt1" in (e.value.hint or "")


def test_a_hash_libcrypt_does_not_know_fails_closed(tmp_path: Path) -> None:
    a = password_system(tmp_path, "$99$abcdefgh$notahashlibcryptknows")
    guard = a.required()
    assert guard is not None
    with pytest.raises(AuthError, match=r"cannot check root's password hash in .*"
                                        r"\(method '99'\)"):
        a.check(guard, PW)


def test_a_wrong_password_costs_the_delay(tmp_path: Path, hashes: dict[str, str]) -> None:
    a = password_system(tmp_path, hashes["$6$"], delay=0.4)
    guard = a.required()
    assert guard is not None
    t0 = time.monotonic()
    assert not a.check(guard, "wrong")
    assert time.monotonic() - t0 >= 0.4
    t0 = time.monotonic()
    assert a.check(guard, PW)
    assert time.monotonic() - t0 < 0.4
    assert auth.FAIL_DELAY >= 1  # the menu's default


# ---------------------------------------------------------------------- maintenance password

def test_maintenance_password_set_check_remove(tmp_path: Path,
                                               hashes: dict[str, str]) -> None:
    a = password_system(tmp_path, hashes["$y$"])
    store = a.store
    auth.set_maintenance(store, "maint pw é", ln=10)
    st = os.stat(store.auth_path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_ISREG(st.st_mode)
    assert sorted(p.name for p in store.root.iterdir()) == [".lock", "maintenance.passwd"]
    text = store.auth_path.read_text()
    record = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert len(record) == 1
    assert re.fullmatch(r"scrypt ln=10 r=8 p=1 salt=[A-Za-z0-9+/]{22}== "
                        r"key=[A-Za-z0-9+/]{43}=", record[0]), record
    assert "maint pw" not in text
    guard = a.required()
    assert guard is not None and guard.kind == "maintenance"
    assert guard.source == store.auth_path
    assert a.check(guard, "maint pw é")
    assert not a.check(guard, PW)  # root's does not open it: the maintenance one replaces it
    first = text
    auth.set_maintenance(store, "maint pw é", ln=10)
    assert store.auth_path.read_text() != first  # a fresh salt each time
    assert auth.remove_maintenance(store) is True
    assert not store.auth_path.exists()
    guard = a.required()
    assert guard is not None and guard.kind == "root"
    assert auth.remove_maintenance(store) is False


def test_set_refuses_an_empty_password_and_a_missing_store(tmp_path: Path) -> None:
    a = password_system(tmp_path)
    with pytest.raises(UsageError, match="cannot be empty"):
        auth.set_maintenance(a.store, "")
    with pytest.raises(UsageError, match="line break"):
        auth.set_maintenance(a.store, "a\nb")
    with pytest.raises(IbiError, match="does not exist"):
        auth.set_maintenance(Store(tmp_path / "nowhere"), "x")
    assert not a.store.auth_path.exists()


GOOD = "scrypt ln=10 r=8 p=1 salt=AAAAAAAAAAAAAAAAAAAAAA== key=" + "A" * 43 + "="


@pytest.mark.parametrize("content, why", [
    ("", "0 password lines, not 1"),
    ("# only a comment\n", "0 password lines, not 1"),
    (GOOD + "\n" + GOOD + "\n", "2 password lines, not 1"),
    ("bcrypt $2b$x\n", "expected 'scrypt ln=.. r=.. p=.. salt=.. key=..'"),
    (GOOD.replace("ln=10", "n=10") + "\n", "expected ln=..., found 'n=10'"),
    (GOOD.replace("ln=10", "ln=ten") + "\n", "invalid literal"),
    (GOOD.replace("salt=AAAA", "salt=!AAA") + "\n", "line 1: "),
    (GOOD.replace("ln=10", "ln=30") + "\n", "need more than 256 MiB"),
    (GOOD.replace("p=1", "p=99") + "\n", "out of range"),
    (GOOD.replace("key=" + "A" * 43 + "=", "key=AAAA") + "\n", "wrong length"),
    ("scrypt ln=10 r=8 p=1 salt=\xe9 key=x\n", "not ASCII text"),
])
def test_a_garbled_password_file_fails_closed(tmp_path: Path, content: str, why: str) -> None:
    a = password_system(tmp_path, "")  # root has no password: still locked
    a.store.auth_path.write_bytes(content.encode("latin-1"))
    with pytest.raises(AuthError) as e:
        a.required()
    msg = str(e.value)
    assert msg.startswith(f"{a.store.auth_path}: the maintenance password file is garbled (")
    assert why in msg and "\n" not in msg
    assert "ibi passwd --remove" in (e.value.hint or "")


def test_a_password_file_that_is_a_directory_fails_closed(tmp_path: Path) -> None:
    a = password_system(tmp_path, "")
    a.store.auth_path.mkdir()
    with pytest.raises(AuthError, match=r"garbled \(not a regular file\)"):
        a.required()


# ---------------------------------------------------------------------- ibi passwd

def ibi(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "maintenance.cli", *args], cwd=REPO,
                          input=stdin, capture_output=True, text=True,
                          stdin=None if stdin is not None else subprocess.DEVNULL)


def test_ibi_passwd_from_stdin_status_and_remove(tmp_path: Path) -> None:
    a = password_system(tmp_path, "*")
    data = str(a.store.data)
    out = ibi("passwd", "--data", data, "--status", "--root", str(tmp_path / "system"))
    assert out.returncode == 0 and "the menu asks for no password" in out.stdout
    out = ibi("passwd", "--data", data, "--stdin", stdin="from a script\nignored\n")
    assert out.returncode == 0, out.stderr
    assert "maintenance password set" in out.stdout
    assert stat.S_IMODE(os.stat(a.store.auth_path).st_mode) == 0o600
    guard = a.required()
    assert guard is not None and a.check(guard, "from a script")
    out = ibi("passwd", "--data", data, "--status", "--json")
    assert out.returncode == 0
    assert '"asks": "maintenance"' in out.stdout
    out = ibi("passwd", "--data", data, "--remove", "--json")
    assert out.returncode == 0 and '"removed": true' in out.stdout
    out = ibi("passwd", "--data", data, "--remove")
    assert out.returncode == 0 and "no maintenance password was set" in out.stdout


def test_ibi_passwd_errors_are_one_line(tmp_path: Path) -> None:
    a = password_system(tmp_path, "")
    data = str(a.store.data)
    out = ibi("passwd", "--data", data, "--stdin", stdin="\n")
    assert out.returncode == 2
    assert out.stderr.startswith("ibi: error: no password on standard input")
    out = ibi("passwd", "--data", data)  # no terminal, no --stdin
    assert out.returncode == 2 and "use --stdin" in out.stderr
    out = ibi("passwd", "--data", str(tmp_path / "none"), "--stdin", stdin="x\n")
    assert out.returncode == 1 and "does not exist" in out.stderr
    a.store.auth_path.write_text("garbage\n")
    out = ibi("passwd", "--data", data, "--status")
    assert out.returncode == 1 and "garbled" in out.stderr and "Traceback" not in out.stderr
    out = ibi("passwd", "--data", data, "--remove")  # the way out of a garbled file
    assert out.returncode == 0 and not a.store.auth_path.exists()
    out = ibi("passwd", "--remove", "--stdin")
    assert out.returncode == 2 and "not allowed with" in out.stderr


def test_ibi_passwd_asks_twice_on_a_terminal(tmp_path: Path) -> None:
    pexpect = pytest.importorskip("pexpect", reason="needs pexpect (pip install pexpect)")
    a = password_system(tmp_path, "")
    cmd = [sys.executable, "-m", "maintenance.cli", "passwd", "--data", str(a.store.data)]
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(REPO), encoding="utf-8", timeout=20)
    child.expect("New maintenance password: ")
    child.sendline("one")
    child.expect("Again: ")
    child.sendline("two")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1 and "the two passwords differ" in (child.before or "")
    assert not a.store.auth_path.exists()
    child = pexpect.spawn(cmd[0], cmd[1:], cwd=str(REPO), encoding="utf-8", timeout=20)
    child.expect("New maintenance password: ")
    child.sendline("typed twice")
    child.expect("Again: ")
    child.sendline("typed twice")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert "typed twice" not in (child.before or "")  # not echoed
    guard = a.required()
    assert guard is not None and a.check(guard, "typed twice")


def test_ibi_passwd_help_says_whose_password() -> None:
    out = ibi("passwd", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for needle in ("root's password of the system being maintained", "--stdin", "--remove",
                   "maintenance.passwd, mode 0600", "exit status:", "examples:",
                   "locked"):
        assert needle in text, needle
