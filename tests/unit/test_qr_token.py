"""Checkpoint QR tokens: signing, verification, rotation and hostile input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.checkpoints.qr_token import InvalidQrToken, QrClaims, QrKeyRing, sign, verify

OLD_SECRET = b"o" * 32
NEW_SECRET = b"n" * 32
RING = QrKeyRing({"k1": OLD_SECRET}, current="k1")
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_."


def reason(ring: QrKeyRing, token: str) -> str:
    with pytest.raises(InvalidQrToken) as caught:
        verify(ring, token)
    return caught.value.reason


def test_round_trip() -> None:
    token = sign(RING, site_id=3, checkpoint_id=42, token_version=7)
    assert verify(RING, token) == QrClaims(
        site_id=3, checkpoint_id=42, token_version=7, key_id="k1"
    )


def test_token_has_the_documented_layout() -> None:
    token = sign(RING, 3, 42, 7)
    version, key_id, site, checkpoint, token_version, sig = token.split(".")
    assert (version, key_id, site, checkpoint, token_version) == ("v1", "k1", "3", "42", "7")
    body = token.rsplit(".", 1)[0].encode()
    digest = hmac.new(OLD_SECRET, body, hashlib.sha256).digest()[:16]
    assert sig == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert "=" not in token


def test_largest_ids_round_trip() -> None:
    big = 2**63 - 1
    assert verify(RING, sign(RING, big, big, big)).checkpoint_id == big


@pytest.mark.parametrize("field", [1, 2, 3, 4])
def test_tampered_field_is_refused(field: int) -> None:
    parts = sign(RING, 3, 42, 7).split(".")
    parts[field] = {1: "k2", 2: "4", 3: "43", 4: "8"}[field]
    ring = QrKeyRing({"k1": OLD_SECRET, "k2": NEW_SECRET}, current="k1")
    assert reason(ring, ".".join(parts)) == "bad_signature"


def test_every_single_character_change_is_refused() -> None:
    token = sign(RING, 3, 42, 7)
    for index, original in enumerate(token):
        for replacement in TOKEN_ALPHABET:
            if replacement == original:
                continue
            # Includes changes to the signature's last character that base64 decoding ignores.
            forged = token[:index] + replacement + token[index + 1 :]
            with pytest.raises(InvalidQrToken):
                verify(RING, forged)


def test_truncated_token_is_refused() -> None:
    token = sign(RING, 3, 42, 7)
    for length in range(len(token)):
        assert reason(RING, token[:length]) in {"malformed", "bad_signature", "unknown_key"}


def test_extra_text_is_refused() -> None:
    token = sign(RING, 3, 42, 7)
    for forged in (token + "\n", " " + token, token + ".x", token + "A"):
        assert reason(RING, forged) == "malformed"


def test_non_canonical_numbers_are_refused() -> None:
    for forged in ("v1.k1.03.42.7.", "v1.k1.+3.42.7.", "v1.k1.٣.42.7.", "v1.k1.0.42.7."):
        assert reason(RING, forged + "A" * 22) == "malformed"


def test_unknown_key_is_refused() -> None:
    other = QrKeyRing({"k9": NEW_SECRET}, current="k9")
    assert reason(RING, sign(other, 3, 42, 7)) == "unknown_key"


def test_other_format_version_is_named() -> None:
    assert reason(RING, "v2.k1.3.42.7." + "A" * 22) == "unsupported_version"


def test_key_rotation() -> None:
    old_token = sign(RING, 3, 42, 7)
    rotated = QrKeyRing({"k1": OLD_SECRET, "k2": NEW_SECRET}, current="k2")
    new_token = sign(rotated, 3, 42, 7)

    assert new_token.split(".")[1] == "k2"
    assert verify(rotated, old_token).key_id == "k1"
    assert verify(rotated, new_token).key_id == "k2"

    retired = QrKeyRing({"k2": NEW_SECRET}, current="k2")
    assert reason(retired, old_token) == "unknown_key"
    assert verify(retired, new_token).checkpoint_id == 42


def test_same_key_id_with_another_secret_is_refused() -> None:
    impostor = QrKeyRing({"k1": NEW_SECRET}, current="k1")
    assert reason(RING, sign(impostor, 3, 42, 7)) == "bad_signature"


def test_revocation_and_site_are_left_to_the_caller() -> None:
    claims = verify(RING, sign(RING, 3, 42, 7))
    # The caller refuses these; verify only vouches for what was signed.
    assert claims.token_version == 7
    assert claims.site_id == 3


@pytest.mark.parametrize(
    ("keys", "current"),
    [
        ({"k1": OLD_SECRET}, "k2"),
        ({"K1": OLD_SECRET}, "K1"),
        ({"k.1": OLD_SECRET}, "k.1"),
        ({"": OLD_SECRET}, ""),
        ({"k1": b"short"}, "k1"),
        ({"a" * 17: OLD_SECRET}, "a" * 17),
    ],
)
def test_bad_key_ring_is_refused(keys: dict[str, bytes], current: str) -> None:
    with pytest.raises(ValueError):
        QrKeyRing(keys, current)


def test_key_ring_repr_hides_secrets() -> None:
    assert "ooo" not in repr(RING)
    assert "k1" in repr(RING)


@pytest.mark.parametrize(
    ("site_id", "checkpoint_id", "token_version"),
    [(0, 1, 0), (1, 0, 0), (1, 1, -1), (2**63, 1, 0)],
)
def test_sign_refuses_out_of_range_ids(
    site_id: int, checkpoint_id: int, token_version: int
) -> None:
    with pytest.raises(ValueError):
        sign(RING, site_id, checkpoint_id, token_version)


def test_sign_refuses_bool_ids() -> None:
    with pytest.raises(TypeError):
        sign(RING, True, 1, 0)


@settings(database=None, max_examples=500)
@given(st.text())
def test_arbitrary_text_raises_only_invalid_qr_token(token: str) -> None:
    with pytest.raises(InvalidQrToken):
        verify(RING, token)


@settings(database=None, max_examples=500)
@given(st.text(alphabet=TOKEN_ALPHABET, max_size=80))
def test_token_shaped_text_raises_only_invalid_qr_token(token: str) -> None:
    with pytest.raises(InvalidQrToken):
        verify(RING, "v1.k1." + token)


def test_huge_input_is_refused_quickly() -> None:
    assert reason(RING, "v1.k1." + "9" * 1_000_000) == "malformed"
