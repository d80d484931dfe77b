"""Who may use the maintenance menu's Shell and the actions that change the store.

The rule is systemd's sulogin's: when root has a password, the Shell and every action that
changes the store (Restore System, Create, Roll back, Delete, saving the state settings,
queueing an action) ask for it, once per menu session. Viewing the stack, the disk use,
what the layer changed, Verify, Live Review, Continue booting, Reboot and Power off ask for
nothing: the boot menu offers them all to whoever sits at the console.

Whose password (``Auth.required``):

1. The **maintenance password**, when one is set (``ibi passwd``): it replaces root's.
   It is kept hashed (scrypt, a random salt) in ``DATA/.root_images/maintenance.passwd``,
   mode 0600, one line (docs/FORMAT.md)::

       scrypt ln=15 r=8 p=1 salt=BASE64 key=BASE64

   A file that cannot be read or parsed fails *closed*: the guarded actions stay locked
   until it is set again or removed (``ibi passwd --remove`` in the running system).
2. Else **root's password of the system being maintained**, as it is now: the writable
   layer's ``DATA/layer/upper/etc/shadow`` when the layer holds one (a regular file), else
   the menu root's ``/etc/shadow`` (in Maintenance Mode: the image stack's; in the running
   system: its own). A whiteout there (the layer deleted the file) falls back to the stack's
   as well: Restore System would bring that one back. The hash is checked with libxcrypt
   (``crypt_rn``/``crypt_r``/``crypt`` from ``libcrypt.so.1`` through ctypes: yescrypt
   ``$y$``, sha512 ``$6$``, ...) and compared in constant time. A shadow file that exists
   but cannot be read, a layer shadow that is not a regular file, and a missing libcrypt
   fail closed, with a one-line message.
3. **Nothing** is asked when root's password field is empty, when there is no shadow file
   or no root line in it, and when root is *locked* (the field starts with ``!`` or ``*``:
   no password can open it, as on an install that gave root no password and uses sudo).
   Like Ubuntu's recovery menu, the console is then trusted; set a maintenance password to
   guard the menu of such a system. (Whoever can edit the boot menu's kernel command line
   can boot around any of this: a GRUB password guards that.)
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import hmac
import logging
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .errors import IbiError, UsageError
from .fsio import atomic_write, fsync_dir
from .layer import is_whiteout
from .store import Store

log = logging.getLogger(__name__)

LIBCRYPT = "libcrypt.so.1"
FAIL_DELAY = 2.0  # seconds a wrong password costs (sulogin's and login's habit)

# scrypt's cost for new maintenance passwords: N = 2**15, r = 8 (32 MiB, ~0.1 s)
SCRYPT_LN, SCRYPT_R, SCRYPT_P = 15, 8, 1
SALT_BYTES, KEY_BYTES = 16, 32
# what a password file may ask for: no more than 256 MiB of memory
MAX_SCRYPT_MEM = 256 << 20
PASSWD_HEADER = ("# ibi maintenance password (ibi passwd): it replaces root's password in "
                 "the maintenance menu.\n# scrypt: log2 N, r, p, salt and key in base64; "
                 "ibi passwd --remove removes it.\n")

# libxcrypt's struct crypt_data is 32 KiB, glibc's old one 128 KiB: room for either
CRYPT_DATA_SIZE = 256 << 10
MAX_PASSPHRASE = 511  # libxcrypt refuses longer phrases (CRYPT_MAX_PASSPHRASE_SIZE)
_crypt_lock = threading.Lock()  # crypt() without _r/_rn keeps its result in static memory


class AuthError(IbiError):
    """Whether a password is needed, or whether this one is right, cannot be told: the
    guarded actions stay locked (fail closed)."""


Kind = Literal["root", "maintenance"]


@dataclass(frozen=True)
class Guard:
    """A password the menu must ask for: root's (from ``source``, a shadow file) or the
    maintenance password (``source``: maintenance.passwd). ``secret`` is the hash."""

    kind: Kind
    source: Path
    secret: bytes = field(repr=False)


class Auth:
    """The engine side of the menu's password: which one is needed, and whether a typed
    one is right. ``root`` is the menu's own root directory (its ``etc/shadow`` is the
    stack's); ``libcrypt`` the library that checks root's hash; ``fail_delay`` what a wrong
    password costs in seconds. Tests point all three elsewhere."""

    def __init__(self, data_dir: str | os.PathLike[str], *, root: str | os.PathLike[str] = "/",
                 libcrypt: str = LIBCRYPT, fail_delay: float = FAIL_DELAY) -> None:
        self.store = Store(data_dir)
        self.root = Path(root)
        self.libcrypt = libcrypt
        self.fail_delay = fail_delay

    # ------------------------------------------------------------------ which password
    def required(self) -> Guard | None:
        """The password the Shell and the store-changing actions need now, or None."""
        record = read_maintenance(self.store)
        if record is not None:
            return Guard("maintenance", self.store.auth_path, record)
        path = self.shadow_path()
        secret = root_field(path)
        if not secret or secret[:1] in (b"!", b"*"):
            return None  # no password, or none that could open the account: nothing to ask
        return Guard("root", path, secret)

    def shadow_path(self) -> Path:
        """The shadow file of the system being maintained: the writable layer's when it
        holds one, else the menu root's (the image stack's)."""
        etc = self.store.upper / "etc"
        layer = etc / "shadow"
        st_etc = _lstat(etc)
        if st_etc is not None and stat.S_ISDIR(st_etc.st_mode):
            st = _lstat(layer)
            if st is not None and not is_whiteout(st, str(layer)):
                if not stat.S_ISREG(st.st_mode):
                    raise AuthError(f"{layer} is not a regular file: root's password cannot "
                                    "be read", hint=LOCKED_HINT)
                return layer
        elif st_etc is not None and not is_whiteout(st_etc, str(etc)):
            raise AuthError(f"{etc} in the writable layer is not a directory: root's "
                            "password cannot be read", hint=LOCKED_HINT)
        return self.root / "etc" / "shadow"

    # ------------------------------------------------------------------ checking
    def check(self, guard: Guard, password: str) -> bool:
        """Whether ``password`` opens ``guard``. A wrong one costs ``fail_delay`` seconds
        (run it off the UI loop). Raises AuthError when the hash cannot be checked."""
        if guard.kind == "maintenance":
            ok = check_scrypt(guard.secret, password, self.store.auth_path)
        else:
            ok = self._check_crypt(guard, password)
        if not ok:
            log.warning("a wrong %s password was typed", guard.kind)
            time.sleep(self.fail_delay)
        return ok

    def _check_crypt(self, guard: Guard, password: str) -> bool:
        phrase = password.encode("utf-8", "surrogateescape")
        if b"\0" in phrase or len(phrase) > MAX_PASSPHRASE:
            return False  # no hash in a shadow file can match it
        out = crypt(phrase, guard.secret, self.libcrypt)
        if out is None or out.startswith(b"*"):
            method = guard.secret.split(b"$")[1].decode("ascii", "replace") \
                if guard.secret.startswith(b"$") else "DES"
            raise AuthError(f"{self.libcrypt} cannot check root's password hash in "
                            f"{guard.source} (method {method!r})", hint=LOCKED_HINT)
        return hmac.compare_digest(out, guard.secret)


LOCKED_HINT = ("the Shell and the actions that change the store stay locked; Continue "
               "booting still works")


def _lstat(path: Path) -> os.stat_result | None:
    """lstat, None when the path does not exist; any other failure is an AuthError."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: OSError) -> AuthError:
    return AuthError(f"cannot read {path}: {e.strerror or e}", hint=LOCKED_HINT)


# ---------------------------------------------------------------------- root's hash

def root_field(path: Path) -> bytes | None:
    """Root's password field in the shadow file ``path``: None when there is no such file
    or no root line, else the field's bytes (b"" when empty)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _unreadable(path, e) from None
    for line in data.splitlines():
        if line.startswith(b"root:"):
            return line.split(b":")[1].strip()
    return None


def crypt(phrase: bytes, setting: bytes, libcrypt: str = LIBCRYPT) -> bytes | None:
    """libxcrypt's crypt of ``phrase`` with ``setting`` (a full hash or a salt string);
    None when it fails. Raises AuthError when the library cannot be loaded."""
    lib = _load(libcrypt)
    if hasattr(lib, "crypt_rn"):
        data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
        fn = lib.crypt_rn
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        out: bytes | None = fn(phrase, setting, data, CRYPT_DATA_SIZE)
    elif hasattr(lib, "crypt_r"):
        data = ctypes.create_string_buffer(CRYPT_DATA_SIZE)
        fn = lib.crypt_r
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p]
        out = fn(phrase, setting, data)
    elif hasattr(lib, "crypt"):
        fn = lib.crypt
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        with _crypt_lock:
            out = fn(phrase, setting)
    else:
        raise AuthError(f"{libcrypt} has no crypt function: root's password cannot be "
                        "checked", hint=LOCKED_HINT)
    return out


def hash_root_password(password: str, prefix: str = "$y$", libcrypt: str = LIBCRYPT) -> str:
    """A shadow hash of ``password`` made by libxcrypt (``$y$`` yescrypt, ``$6$`` sha512,
    ...) with a random salt: what passwd(1) writes. Used to make test systems."""
    lib = _load(libcrypt)
    fn = lib.crypt_gensalt_rn
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int,
                   ctypes.c_char_p, ctypes.c_int]
    buf = ctypes.create_string_buffer(256)
    salt = fn(prefix.encode(), 0, None, 0, buf, len(buf))
    if not salt:
        raise AuthError(f"{libcrypt} cannot make a {prefix} salt")
    out = crypt(password.encode(), salt, libcrypt)
    if out is None or out.startswith(b"*"):
        raise AuthError(f"{libcrypt} cannot hash with {prefix}")
    return out.decode("ascii")


def _load(libcrypt: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(libcrypt)
    except OSError as e:
        raise AuthError(f"cannot check root's password: {libcrypt} cannot be loaded ({e})",
                        hint="install libcrypt1; " + LOCKED_HINT) from None


# ---------------------------------------------------------------------- the maintenance password

def read_maintenance(store: Store) -> bytes | None:
    """The maintenance password's record (the file's one line), checked; None when none
    is set. Raises AuthError when the file cannot be read or is garbled."""
    path = store.auth_path
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise _unreadable(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        raise _garbled(path, "not a regular file")
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as e:
        raise _unreadable(path, e) from None
    except UnicodeDecodeError:
        raise _garbled(path, "not ASCII text") from None
    lines = [(n, ln.strip()) for n, ln in enumerate(text.splitlines(), 1)
             if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) != 1:
        raise _garbled(path, f"{len(lines)} password lines, not 1")
    n, line = lines[0]
    parse_record(line.encode(), path, n)
    return line.encode()


def parse_record(record: bytes, path: Path, lineno: int = 1
                 ) -> tuple[int, int, int, bytes, bytes]:
    """``scrypt ln=L r=R p=P salt=B64 key=B64`` -> (N, r, p, salt, key); AuthError when
    garbled or asking for more than MAX_SCRYPT_MEM of memory."""
    words = record.decode("ascii", "replace").split()
    where = f"line {lineno}"
    if len(words) != 6 or words[0] != "scrypt":
        raise _garbled(path, f"{where}: expected 'scrypt ln=.. r=.. p=.. salt=.. key=..'")
    values: dict[str, str] = {}
    for word, name in zip(words[1:], ("ln", "r", "p", "salt", "key"), strict=True):
        label, eq, value = word.partition("=")
        if label != name or not eq or not value:
            raise _garbled(path, f"{where}: expected {name}=..., found {word[:20]!r}")
        values[name] = value
    try:
        ln, r, p = int(values["ln"]), int(values["r"]), int(values["p"])
        salt = base64.b64decode(values["salt"], validate=True)
        key = base64.b64decode(values["key"], validate=True)
    except (ValueError, binascii.Error) as e:
        raise _garbled(path, f"{where}: {e}") from None
    if not (1 <= ln <= 30 and 1 <= r <= 64 and 1 <= p <= 16):
        raise _garbled(path, f"{where}: scrypt parameters out of range (ln={ln} r={r} p={p})")
    if 128 * r * (1 << ln) > MAX_SCRYPT_MEM:
        raise _garbled(path, f"{where}: scrypt parameters need more than "
                             f"{MAX_SCRYPT_MEM >> 20} MiB (ln={ln} r={r})")
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        raise _garbled(path, f"{where}: salt or key of a wrong length")
    return 1 << ln, r, p, salt, key


def _garbled(path: Path, why: str) -> AuthError:
    return AuthError(f"{path}: the maintenance password file is garbled ({why})",
                     hint="set it again with ibi passwd, or remove it with ibi passwd "
                     "--remove (from the running system); until then " + LOCKED_HINT)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, size: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt, n=n, r=r,
                          p=p, dklen=size, maxmem=128 * r * n + (1 << 20) * (p + 1))


def check_scrypt(record: bytes, password: str, path: Path) -> bool:
    n, r, p, salt, key = parse_record(record, path)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(key)), key)


def make_record(password: str, *, ln: int = SCRYPT_LN, r: int = SCRYPT_R,
                p: int = SCRYPT_P) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, 1 << ln, r, p, KEY_BYTES)
    return (f"scrypt ln={ln} r={r} p={p} salt={base64.b64encode(salt).decode()} "
            f"key={base64.b64encode(key).decode()}")


def set_maintenance(store: Store, password: str, *, ln: int = SCRYPT_LN) -> None:
    """Set the maintenance password: hashed, written atomically, mode 0600."""
    if not password:
        raise UsageError("the maintenance password cannot be empty "
                         "(ibi passwd --remove goes back to root's password)")
    if "\n" in password or "\r" in password:
        raise UsageError("the maintenance password cannot hold a line break")
    store.require()
    text = PASSWD_HEADER + make_record(password, ln=ln) + "\n"
    with store.locked():
        old = os.umask(0o077)  # the temp file is 0600 from its creation
        try:
            atomic_write(store.auth_path, text)
        finally:
            os.umask(old)
        os.chmod(store.auth_path, 0o600)


def remove_maintenance(store: Store) -> bool:
    """Remove the maintenance password (root's is asked again); whether one was set."""
    store.require()
    with store.locked():
        try:
            store.auth_path.unlink()
        except FileNotFoundError:
            return False
        fsync_dir(store.auth_path.parent)
    return True
