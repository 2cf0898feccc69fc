"""The RSA key pair that identifies this computer to phones, as adb keeps it.

adb stores the private key (PEM, PKCS#8) in ``~/.android/adbkey`` and the public key, in
Android's own base64 format followed by `` user@host``, in ``~/.android/adbkey.pub``; the phone
shows the key's fingerprint in its "Allow USB debugging?" prompt.  `ensure_adb_key` creates the
pair with the same layout (private key mode 0600) when it is absent, so pearl and adb share one
identity.  ``$PEARL_ADB_KEY`` points pearl at another private key file (the tests use one in a
temporary folder).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from models.files import atomic_write

ADB_KEY_ENV = "PEARL_ADB_KEY"


def default_key_path() -> Path:
    """``$PEARL_ADB_KEY``, else ``~/.android/adbkey``."""
    override = os.environ.get(ADB_KEY_ENV)
    return Path(override).expanduser() if override else Path.home() / ".android" / "adbkey"


def ensure_adb_key(path: str | os.PathLike | None = None) -> Path:
    """The private key path, after creating the key pair if it does not exist yet.

    A missing ``.pub`` beside an existing private key is re-derived from it."""
    from adb_shell.auth.keygen import encode_pubkey, get_user_info

    path = Path(path).expanduser() if path is not None else default_key_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, mode=0o600)
    public = Path(f"{path}.pub")
    if not public.exists():
        import base64

        try:
            blob = encode_pubkey(str(path))
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"{path} is not a PEM RSA private key ({err}); move it away and pearl creates a "
                f"new one, or point {ADB_KEY_ENV} at a valid adb key"
            ) from None
        atomic_write(public, base64.b64encode(blob) + get_user_info().encode(), mode=0o644)
    return path


def load_signer(path: str | os.PathLike | None = None):
    """An adb-shell signer for the key at `path` (created if absent).  Loaded once per process
    and key file version: parsing and validating an RSA key costs ~80 ms, more than the whole
    ADB handshake."""
    key = ensure_adb_key(path)
    info = key.stat()
    return _cached_signer(str(key), info.st_mtime_ns, info.st_size)


@functools.lru_cache(maxsize=8)
def _cached_signer(path: str, _mtime_ns: int, _size: int):
    from adb_shell.auth.sign_cryptography import CryptographySigner

    return CryptographySigner(path)
