"""NFC tag UIDs and NTAG 424 DNA SUN verification (NXP AN12196)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from server.checkpoints.nfc import InvalidSun, SunResult, is_replay, normalize_uid, verify_sun

ZERO_KEY = bytes(16)
# The AN12196 example, all-zero keys.
EXAMPLE_PICC = "EF963FF7828658A599F3041510671E88"
EXAMPLE_CMAC = "94EED9EE65337086"


def tag_sun(uid: bytes, counter: int, meta_key: bytes, file_key: bytes) -> tuple[str, str]:
    """Build the (picc_data, cmac) a tag would mirror, written independently of the module."""
    picc = bytes([0xC7]) + uid + counter.to_bytes(3, "little") + os.urandom(5)
    encryptor = Cipher(algorithms.AES(meta_key), modes.CBC(bytes(16))).encryptor()
    picc_data = encryptor.update(picc) + encryptor.finalize()
    sv2 = bytes.fromhex("3CC300010080") + uid + counter.to_bytes(3, "little")
    session = CMAC(algorithms.AES(file_key))
    session.update(sv2)
    mac = CMAC(algorithms.AES(session.finalize()))
    full = mac.finalize()
    truncated = bytes(full[i] for i in range(1, 16, 2))
    return picc_data.hex().upper(), truncated.hex().upper()


def test_an12196_example() -> None:
    result = verify_sun(EXAMPLE_PICC, EXAMPLE_CMAC, ZERO_KEY, ZERO_KEY)
    assert result == SunResult(uid="04DE5F1EACC040", counter=61)


def test_lower_case_hex_is_accepted() -> None:
    result = verify_sun(EXAMPLE_PICC.lower(), EXAMPLE_CMAC.lower(), ZERO_KEY, ZERO_KEY)
    assert result.counter == 61


def test_round_trip_with_real_keys() -> None:
    meta_key, file_key = os.urandom(16), os.urandom(16)
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    picc, mac = tag_sun(uid, 0xABCDEF, meta_key, file_key)
    assert verify_sun(picc, mac, meta_key, file_key) == SunResult(
        uid="04A1B2C3D4E5F6", counter=0xABCDEF
    )


def test_wrong_cmac_is_refused() -> None:
    for index in range(len(EXAMPLE_CMAC)):
        digit = "0" if EXAMPLE_CMAC[index] != "0" else "1"
        forged = EXAMPLE_CMAC[:index] + digit + EXAMPLE_CMAC[index + 1 :]
        with pytest.raises(InvalidSun) as caught:
            verify_sun(EXAMPLE_PICC, forged, ZERO_KEY, ZERO_KEY)
        assert caught.value.reason == "bad_cmac"


def test_wrong_file_read_key_is_refused() -> None:
    with pytest.raises(InvalidSun) as caught:
        verify_sun(EXAMPLE_PICC, EXAMPLE_CMAC, ZERO_KEY, bytes(15) + b"\x01")
    assert caught.value.reason == "bad_cmac"


def test_wrong_meta_read_key_is_refused() -> None:
    with pytest.raises(InvalidSun):
        verify_sun(EXAMPLE_PICC, EXAMPLE_CMAC, bytes(15) + b"\x01", ZERO_KEY)


def test_keys_of_another_tag_are_refused() -> None:
    meta_key, file_key = os.urandom(16), os.urandom(16)
    picc, mac = tag_sun(bytes.fromhex("04A1B2C3D4E5F6"), 5, meta_key, file_key)
    with pytest.raises(InvalidSun):
        verify_sun(picc, mac, meta_key, os.urandom(16))
    with pytest.raises(InvalidSun):
        verify_sun(picc, mac, os.urandom(16), file_key)


def test_picc_data_from_another_read_is_refused() -> None:
    meta_key, file_key = os.urandom(16), os.urandom(16)
    uid = bytes.fromhex("04A1B2C3D4E5F6")
    picc_5, _ = tag_sun(uid, 5, meta_key, file_key)
    _, mac_6 = tag_sun(uid, 6, meta_key, file_key)
    with pytest.raises(InvalidSun):
        verify_sun(picc_5, mac_6, meta_key, file_key)


@pytest.mark.parametrize(
    ("picc", "mac"),
    [
        (EXAMPLE_PICC[:-2], EXAMPLE_CMAC),
        (EXAMPLE_PICC + "00", EXAMPLE_CMAC),
        (EXAMPLE_PICC, EXAMPLE_CMAC[:-2]),
        (EXAMPLE_PICC, EXAMPLE_CMAC + "00"),
        (EXAMPLE_PICC[:-1] + "G", EXAMPLE_CMAC),
        (EXAMPLE_PICC, EXAMPLE_CMAC[:-1] + "Z"),
        ("EF 96 3F F7 82 86 58 A5 99 F3 04 15 10 67 1E 88", EXAMPLE_CMAC),
        (EXAMPLE_PICC[:-2] + "１２", EXAMPLE_CMAC),
        ("", ""),
    ],
)
def test_malformed_input_is_refused(picc: str, mac: str) -> None:
    with pytest.raises(InvalidSun) as caught:
        verify_sun(picc, mac, ZERO_KEY, ZERO_KEY)
    assert caught.value.reason.startswith("malformed_")


def test_keys_must_be_aes_128() -> None:
    with pytest.raises(ValueError):
        verify_sun(EXAMPLE_PICC, EXAMPLE_CMAC, bytes(32), ZERO_KEY)
    with pytest.raises(ValueError):
        verify_sun(EXAMPLE_PICC, EXAMPLE_CMAC, ZERO_KEY, b"")


def test_is_replay() -> None:
    assert not is_replay(61, None)
    assert not is_replay(62, 61)
    assert is_replay(61, 61)
    assert is_replay(60, 61)
    assert not is_replay(0, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("04:de:5f:1e:ac:c0:40", "04DE5F1EACC040"),
        ("04-DE-5F-1E-AC-C0-40", "04DE5F1EACC040"),
        ("04 de 5f 1e ac c0 40", "04DE5F1EACC040"),
        ("04de5f1eacc040", "04DE5F1EACC040"),
        ("deadbeef", "DEADBEEF"),
        ("00112233445566778899", "00112233445566778899"),
    ],
)
def test_normalize_uid(raw: str, expected: str) -> None:
    assert normalize_uid(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        ":::",
        "04de5f1eacc0",  # 6 bytes
        "04de5f1eacc04",  # odd length
        "04de5f1eacc040ff",  # 8 bytes
        "zzde5f1eacc040",
        "04de5f1eacc040\n",
        "04_de_5f_1e_ac_c0_40",
        "０４de5f1eacc040",
    ],
)
def test_normalize_uid_refuses(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_uid(raw)
