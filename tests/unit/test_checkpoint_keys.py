"""Checkpoint keys: the QR ring from settings and NFC tag keys sealed to their UID."""

from __future__ import annotations

import os

import pytest

from server.checkpoints.keys import nfc_key_context, qr_ring, seal_sun_keys, unseal_sun_keys
from server.checkpoints.qr_token import InvalidQrToken, sign, verify
from server.config import load_settings
from server.sealed import SealError, seal, unseal

KEK = os.urandom(32)
UID = "04DE5F1EACC040"
META = bytes(range(16))
FILE = bytes(range(16, 32))


def test_context_is_the_prefix_and_the_normalised_uid() -> None:
    assert nfc_key_context(UID) == b"nfc-sun:04DE5F1EACC040"
    assert nfc_key_context("04:de:5f:1e:ac:c0:40") == b"nfc-sun:04DE5F1EACC040"
    assert nfc_key_context("04-de-5f-1e") == b"nfc-sun:04DE5F1E"


@pytest.mark.parametrize("uid", ["", "xyz", "04DE5", "04DE5F"])
def test_context_refuses_a_malformed_uid(uid: str) -> None:
    with pytest.raises(ValueError):
        nfc_key_context(uid)


def test_keys_round_trip_whatever_the_uid_spelling() -> None:
    sealed = seal_sun_keys(KEK, "04:de:5f:1e:ac:c0:40", META, FILE)
    assert unseal_sun_keys(KEK, UID, sealed) == (META, FILE)


def test_sealed_value_is_meta_then_file_under_the_documented_context() -> None:
    # Scan verification (another module) unseals with exactly this context.
    sealed = seal_sun_keys(KEK, UID, META, FILE)
    assert unseal(KEK, sealed, context=b"nfc-sun:" + UID.encode()) == META + FILE
    assert META not in sealed
    assert FILE not in sealed


def test_keys_do_not_open_for_another_tag_or_kek() -> None:
    sealed = seal_sun_keys(KEK, UID, META, FILE)
    with pytest.raises(SealError):
        unseal_sun_keys(KEK, "04DE5F1EACC041", sealed)
    with pytest.raises(SealError):
        unseal_sun_keys(os.urandom(32), UID, sealed)


def test_each_seal_is_fresh() -> None:
    assert seal_sun_keys(KEK, UID, META, FILE) != seal_sun_keys(KEK, UID, META, FILE)


@pytest.mark.parametrize(("meta", "file"), [(bytes(15), FILE), (META, bytes(17)), (b"", b"")])
def test_keys_must_be_aes_128(meta: bytes, file: bytes) -> None:
    with pytest.raises(ValueError):
        seal_sun_keys(KEK, UID, meta, file)


def test_a_sealed_value_of_the_wrong_length_is_refused() -> None:
    sealed = seal(KEK, META, context=nfc_key_context(UID))
    with pytest.raises(SealError):
        unseal_sun_keys(KEK, UID, sealed)


def test_qr_ring_signs_with_the_current_key_and_verifies_with_all() -> None:
    old_secret, new_secret = "o" * 32, "n" * 32
    old = qr_ring(load_settings({"ESTATEOPS_QR_KEYS": f"k1:{old_secret}"}))
    both = qr_ring(load_settings({"ESTATEOPS_QR_KEYS": f"k2:{new_secret},k1:{old_secret}"}))
    new_only = qr_ring(load_settings({"ESTATEOPS_QR_KEYS": f"k2:{new_secret}"}))

    old_token = sign(old, 7, 42, 1)
    new_token = sign(both, 7, 42, 1)

    assert both.current == "k2"
    assert new_token.startswith("v1.k2.")
    assert verify(both, old_token).key_id == "k1"
    assert verify(both, new_token).checkpoint_id == 42
    with pytest.raises(InvalidQrToken):
        verify(new_only, old_token)


def test_development_settings_give_a_working_ring() -> None:
    ring = qr_ring(load_settings({"ESTATEOPS_ENV": "development"}))
    assert verify(ring, sign(ring, 1, 2, 3)).token_version == 3
