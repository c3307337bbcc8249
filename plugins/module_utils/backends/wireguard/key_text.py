"""WireGuard keys as text: base64 in leases and the config (44 characters, 32 bytes), hex on
the UAPI socket. Plain data, read by the config model (the PSK's check) and the backend."""

from __future__ import annotations

import base64
import binascii

KEY_LEN = 32


def key_bytes(text: object) -> bytes | None:
    """The 32 bytes of a base64 WireGuard key; None when `text` is not one."""
    if not isinstance(text, str) or len(text.strip()) != 44:
        return None
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_LEN else None


def key_problem(text: object) -> str | None:
    """Why `text` is not a base64 WireGuard key (None: it is)."""
    if key_bytes(text) is None:
        return "is not a WireGuard key (32 bytes, base64: 44 characters, as `wg genpsk` prints)"
    return None


def to_hex(b64: str) -> str:
    raw = key_bytes(b64)
    if raw is None:
        raise ValueError("not a WireGuard key")
    return raw.hex()


def from_hex(text: str) -> str:
    return base64.b64encode(bytes.fromhex(text)).decode()


def clamped(private: str) -> str:
    """A private key as Curve25519 uses it (and a device reports it back): low 3 bits and the
    top bit cleared, bit 254 set. `wg genkey` prints keys so; one written by hand may not be."""
    raw = bytearray(key_bytes(private) or b"")
    if len(raw) != KEY_LEN:
        raise ValueError("not a WireGuard key")
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return base64.b64encode(bytes(raw)).decode()
