"""The server's checkpoint keys: the QR signing ring and NTAG 424 DNA tag keys sealed at rest.

A SUN tag's two AES-128 keys are stored as one sealed value, ``meta_read_key ||
file_read_key``, bound to the tag's normalised UID, so a sealed value copied onto
another tag's row does not open. Scan verification unseals with exactly
:func:`nfc_key_context`.
"""

from __future__ import annotations

from server.checkpoints.nfc import KEY_BYTES, normalize_uid
from server.checkpoints.qr_token import QrKeyRing
from server.config import Settings
from server.sealed import SealError, seal, unseal

__all__ = ["nfc_key_context", "qr_ring", "seal_sun_keys", "unseal_sun_keys"]

_CONTEXT_PREFIX = b"nfc-sun:"


def qr_ring(settings: Settings) -> QrKeyRing:
    """The QR key ring of these settings: the current key signs, every key verifies."""
    return QrKeyRing(settings.keys.qr_keys, settings.keys.qr_current)


def nfc_key_context(uid: str) -> bytes:
    """The sealing context of a tag's keys; raise ValueError for a malformed UID."""
    return _CONTEXT_PREFIX + normalize_uid(uid).encode("ascii")


def _check_key(name: str, key: bytes) -> None:
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes (AES-128)")


def seal_sun_keys(kek: bytes, uid: str, meta_key: bytes, file_key: bytes) -> bytes:
    """Seal a SUN tag's meta-read and file-read keys under the KEK, bound to its UID."""
    _check_key("meta_key", meta_key)
    _check_key("file_key", file_key)
    return seal(kek, meta_key + file_key, context=nfc_key_context(uid))


def unseal_sun_keys(kek: bytes, uid: str, sealed: bytes) -> tuple[bytes, bytes]:
    """Open keys sealed by :func:`seal_sun_keys`: (meta_read_key, file_read_key)."""
    keys = unseal(kek, sealed, context=nfc_key_context(uid))
    if len(keys) != 2 * KEY_BYTES:
        raise SealError("sealed NFC keys have the wrong length")
    return keys[:KEY_BYTES], keys[KEY_BYTES:]
