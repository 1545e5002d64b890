"""Secrets sealed at rest with AES-256-GCM."""

from __future__ import annotations

import os

import pytest

from server.sealed import SealError, seal, unseal

KEK = os.urandom(32)
CONTEXT = b"nfc-meta-key:checkpoint:42"


def test_round_trip() -> None:
    secret = os.urandom(16)
    assert unseal(KEK, seal(KEK, secret, context=CONTEXT), context=CONTEXT) == secret


def test_empty_plaintext_round_trips() -> None:
    assert unseal(KEK, seal(KEK, b"", context=CONTEXT), context=CONTEXT) == b""


def test_layout_and_fresh_nonce() -> None:
    first = seal(KEK, b"same", context=CONTEXT)
    second = seal(KEK, b"same", context=CONTEXT)
    assert first[0] == 1
    assert len(first) == 1 + 12 + len(b"same") + 16
    assert first[1:13] != second[1:13]
    assert b"same" not in first


def test_other_context_is_refused() -> None:
    sealed = seal(KEK, b"key", context=CONTEXT)
    with pytest.raises(SealError):
        unseal(KEK, sealed, context=b"nfc-meta-key:checkpoint:43")


def test_other_kek_is_refused() -> None:
    sealed = seal(KEK, b"key", context=CONTEXT)
    with pytest.raises(SealError):
        unseal(os.urandom(32), sealed, context=CONTEXT)


def test_every_flipped_bit_is_refused() -> None:
    sealed = seal(KEK, b"0123456789abcdef", context=CONTEXT)
    for index in range(len(sealed)):
        for bit in range(8):
            tampered = bytearray(sealed)
            tampered[index] ^= 1 << bit
            with pytest.raises(SealError):
                unseal(KEK, bytes(tampered), context=CONTEXT)


@pytest.mark.parametrize("length", [0, 1, 12, 13, 28])
def test_truncated_is_refused(length: int) -> None:
    sealed = seal(KEK, b"key", context=CONTEXT)
    with pytest.raises(SealError):
        unseal(KEK, sealed[:length], context=CONTEXT)


@pytest.mark.parametrize("size", [0, 16, 24, 31, 33])
def test_kek_must_be_32_bytes(size: int) -> None:
    with pytest.raises(ValueError):
        seal(bytes(size), b"key", context=CONTEXT)
    with pytest.raises(ValueError):
        unseal(bytes(size), b"\x01" + bytes(40), context=CONTEXT)
