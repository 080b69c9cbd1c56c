"""Key material: the master key on disk, and what is derived from it.

* The **master key** (256 bits) lives in a file only the service user can read, or in a systemd
  credential (``$CREDENTIALS_DIRECTORY/<name>``, preferred when set). It never enters the
  database. From it, HKDF-SHA256 derives (with the database's random salt) a *key-check value*
  stored in the database, the *key-wrapping key*, and the *state key* for the small key-value
  store.
* **Data keys** are random 256-bit keys, one per (stream, epoch), generated on the device and
  stored only wrapped (AEAD) by the key-wrapping key. Destroying the wrapped copy destroys the
  epoch's records for anyone who holds the current key store (crypto-shredding).
"""

from __future__ import annotations

import hmac
import os
import stat
from pathlib import Path

from heatgate.buffer.errors import MasterKeyFileError
from heatgate.hkdf import hkdf_sha256
from heatgate.sodium import ChaCha20Poly1305

__all__ = [
    "MASTER_KEY_BYTES",
    "DerivedKeys",
    "create_master_key",
    "derive_keys",
    "load_master_key",
]

MASTER_KEY_BYTES = 32


def load_master_key(path: Path, credential_name: str | None = None) -> bytes:
    """Read the 32-byte master key.

    When ``$CREDENTIALS_DIRECTORY`` is set and ``credential_name`` is given, the key is read from
    ``$CREDENTIALS_DIRECTORY/<credential_name>`` (systemd puts it there, readable by the service
    only) and ``path`` is not consulted. Otherwise ``path`` is read; it must be a regular file
    that neither group nor others can read or write.

    The file holds either the 32 raw bytes or 64 hex digits (a trailing newline is allowed).
    Raises :class:`MasterKeyFileError` (carrying the path and the reason) on any problem.
    """
    credentials_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir and credential_name:
        # systemd owns the mode of credentials (0400 in a private mount); no mode check needed.
        return _read_key(Path(credentials_dir) / credential_name, check_mode=False)
    return _read_key(Path(path), check_mode=True)


def _read_key(path: Path, *, check_mode: bool) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise MasterKeyFileError(path, "does not exist (run `heatgate provision`)") from None
    except OSError as exc:
        raise MasterKeyFileError(path, f"cannot be opened: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyFileError(path, "is not a regular file")
        if check_mode and info.st_mode & 0o077:
            raise MasterKeyFileError(
                path,
                f"mode {stat.S_IMODE(info.st_mode):04o} lets group or others access it; run: chmod 600 {path}",
            )
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    return _parse_key(path, raw)


def _parse_key(path: Path, raw: bytes) -> bytes:
    if len(raw) == MASTER_KEY_BYTES:
        return raw
    text = raw.strip()
    if len(text) == 2 * MASTER_KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    raise MasterKeyFileError(path, f"must hold {MASTER_KEY_BYTES} raw bytes or {2 * MASTER_KEY_BYTES} hex digits")


def create_master_key(path: Path, *, force: bool = False) -> bool:
    """Write a fresh random master key (64 hex digits) to ``path`` with mode 0600, its parent
    directory 0700. Never overwrites an existing file unless ``force``; returns whether it wrote.

    The key is written to a temporary file in the same directory, fsynced and renamed into
    place, so that a crash leaves either the old key or the new one.
    """
    path = Path(path)
    if path.exists() and not force:
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, os.urandom(MASTER_KEY_BYTES).hex().encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return True


class DerivedKeys:
    """Keys derived from the master key and a database's salt. Holds no master key itself."""

    __slots__ = ("_wrap", "check_value", "state_key")

    def __init__(self, master_key: bytes, salt: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError(f"master key must be {MASTER_KEY_BYTES} bytes")
        self.check_value = _hkdf(master_key, salt, b"heatgate buffer v1 key-check")
        self._wrap = ChaCha20Poly1305(_hkdf(master_key, salt, b"heatgate buffer v1 key-wrap"))
        self.state_key = _hkdf(master_key, salt, b"heatgate buffer v1 state")

    def matches(self, stored_check_value: bytes) -> bool:
        return hmac.compare_digest(self.check_value, stored_check_value)

    def wrap(self, data_key: bytes, associated: bytes) -> bytes:
        """AEAD-wrap a data key; ``associated`` names what the key is for (stream, epoch)."""
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, data_key, associated)

    def unwrap(self, wrapped: bytes, associated: bytes) -> bytes:
        """Raises :class:`heatgate.sodium.AuthenticationFailed` if the wrapped key was altered or moved."""
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], associated)


def derive_keys(master_key: bytes, salt: bytes) -> DerivedKeys:
    return DerivedKeys(master_key, salt)


def _hkdf(master_key: bytes, salt: bytes, info: bytes) -> bytes:
    return hkdf_sha256(master_key, salt=salt, info=info, length_bytes=32)
