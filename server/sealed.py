"""Secrets at rest (NFC tag keys and the like) sealed under a key-encryption key.

Layout: ``version (1 byte) || nonce (12 bytes) || AES-256-GCM ciphertext and tag``.
``context`` is bound as associated data, so a sealed value only opens where it was
sealed: pass something that names its owner, e.g. ``b"nfc-meta-key:checkpoint:42"``.
Random 96-bit nonces are safe for far more seals under one KEK than this system makes.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["SealError", "seal", "unseal"]

VERSION = 1
KEK_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER_BYTES = 1 + NONCE_BYTES


class SealError(Exception):
    """A sealed value that is truncated, of an unknown version, or fails authentication."""


def _aead(kek: bytes) -> AESGCM:
    if len(kek) != KEK_BYTES:
        raise ValueError(f"KEK must be {KEK_BYTES} bytes (AES-256)")
    return AESGCM(kek)


def seal(kek: bytes, plaintext: bytes, *, context: bytes) -> bytes:
    """Encrypt and authenticate ``plaintext`` bound to ``context``."""
    aead = _aead(kek)
    nonce = os.urandom(NONCE_BYTES)
    return bytes([VERSION]) + nonce + aead.encrypt(nonce, plaintext, context)


def unseal(kek: bytes, sealed: bytes, *, context: bytes) -> bytes:
    """Open a value made by :func:`seal` with the same KEK and context; raise SealError if not."""
    aead = _aead(kek)
    if len(sealed) < _HEADER_BYTES + TAG_BYTES:
        raise SealError("sealed value is truncated")
    if sealed[0] != VERSION:
        raise SealError(f"unknown sealed format version {sealed[0]}")
    nonce = sealed[1:_HEADER_BYTES]
    try:
        return aead.decrypt(nonce, sealed[_HEADER_BYTES:], context)
    except InvalidTag:
        # Wrong KEK, wrong context and tampering look the same to GCM, by design.
        raise SealError("sealed value failed authentication") from None
