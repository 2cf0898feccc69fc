"""The wire format of the ADB transport and file-sync protocols, device side (a test double).

Written from the protocol descriptions in AOSP's ``adb/protocol.txt`` and ``adb/SYNC.TXT``
(read, not copied): every message is a 24-byte little-endian header ``command, arg0, arg1,
data_length, data_checksum, magic`` (magic = command XOR 0xffffffff; the checksum, the sum of
the payload bytes, is checked for protocol version 0x01000000 and skipped from 0x01000001) and
the payload.  RSA public keys travel in Android's ``RSAPublicKey`` struct, base64-encoded.
"""

from __future__ import annotations

import base64
import struct

A_CNXN = b"CNXN"
A_AUTH = b"AUTH"
A_OPEN = b"OPEN"
A_OKAY = b"OKAY"
A_WRTE = b"WRTE"
A_CLSE = b"CLSE"
COMMANDS = (A_CNXN, A_AUTH, A_OPEN, A_OKAY, A_WRTE, A_CLSE)

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

VERSION_CHECKSUMMED = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
HEADER = struct.Struct("<6I")
TOKEN_SIZE = 20


class ProtocolError(Exception):
    """The host sent something a real adbd would drop the connection for."""


def wire(command: bytes) -> int:
    return struct.unpack("<I", command)[0]


_BY_WIRE = {wire(c): c for c in COMMANDS}


def payload_checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def pack(command: bytes, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    code = wire(command)
    return (
        HEADER.pack(code, arg0, arg1, len(data), payload_checksum(data), code ^ 0xFFFFFFFF) + data
    )


def unpack_header(raw: bytes) -> tuple[bytes, int, int, int, int]:
    """``(command, arg0, arg1, length, checksum)``; raises ProtocolError on a bad magic or an
    unknown command."""
    code, arg0, arg1, length, checksum, magic = HEADER.unpack(raw)
    if magic != code ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic {magic:#x} for command {code:#x}")
    if code not in _BY_WIRE:
        raise ProtocolError(f"unknown command {code:#x}")
    return _BY_WIRE[code], arg0, arg1, length, checksum


# ---------------------------------------------------------------------------- RSA keys

_RSA_WORDS = 64  # 2048-bit modulus as 64 little-endian 32-bit words
_PUBKEY = struct.Struct(f"<II{_RSA_WORDS * 4}s{_RSA_WORDS * 4}sI")


def decode_android_pubkey(text: bytes) -> tuple[int, int]:
    """``(modulus, exponent)`` from an ``adbkey.pub`` payload (base64 struct, optional
    `` user@host`` and NUL).  Raises ProtocolError when it is not one."""
    blob = text.split(b"\0", 1)[0].strip().split(b" ", 1)[0]
    try:
        raw = base64.b64decode(blob, validate=True)
        words, n0inv, modulus_le, rr_le, exponent = _PUBKEY.unpack(raw)
    except (ValueError, struct.error) as err:
        raise ProtocolError(f"not an Android RSA public key ({err})") from None
    if words != _RSA_WORDS:
        raise ProtocolError(f"unsupported key size: {words} words")
    modulus = int.from_bytes(modulus_le, "little")
    # n0inv = -1 / n mod 2^32 and rr = 2^4096 mod n: a corrupt key fails these checks
    if (n0inv * modulus) % (1 << 32) != (1 << 32) - 1:
        raise ProtocolError("public key n0inv does not match its modulus")
    if int.from_bytes(rr_le, "little") != pow(2, 2 * 2048, modulus):
        raise ProtocolError("public key rr does not match its modulus")
    return modulus, exponent


def verify_token_signature(public_key: tuple[int, int], token: bytes, signature: bytes) -> bool:
    """adb signs the random token as if it were a SHA-1 digest (RSA PKCS#1 v1.5)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    modulus, exponent = public_key
    key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    try:
        key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except InvalidSignature:
        return False
    return True


# ---------------------------------------------------------------------------- file sync

SYNC_REQUEST = struct.Struct("<4sI")
ID_STAT, ID_SEND, ID_RECV, ID_DATA, ID_DONE, ID_QUIT, ID_LIST, ID_DENT = (
    b"STAT",
    b"SEND",
    b"RECV",
    b"DATA",
    b"DONE",
    b"QUIT",
    b"LIST",
    b"DENT",
)
ID_OKAY, ID_FAIL = b"OKAY", b"FAIL"
SYNC_DATA_MAX = 64 * 1024


def sync_message(ident: bytes, value: int, data: bytes = b"") -> bytes:
    return SYNC_REQUEST.pack(ident, value) + data


def sync_fail(message: str) -> bytes:
    data = message.encode()
    return sync_message(ID_FAIL, len(data), data)
