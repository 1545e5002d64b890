"""NFC checkpoint tags: plain UIDs and NTAG 424 DNA SUN messages (NXP AN12196).

A plain UID is trivially cloned, so it only proves someone saw the tag. A SUN message
carries a per-read counter under a MAC only the tag and the server can compute, so a
copied URL can be refused as a replay. The replay check needs the last counter stored
for the tag and is done by the caller in SQL (accept only ``counter > last_counter``,
then store it in the same statement); :func:`is_replay` states the rule.
"""

from __future__ import annotations

import hmac
import re

import msgspec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

__all__ = ["InvalidSun", "SunResult", "is_replay", "normalize_uid", "verify_sun"]

UID_BYTE_LENGTHS = (4, 7, 10)
KEY_BYTES = 16
PICC_DATA_BYTES = 16
SUN_MAC_BYTES = 8

_UID_SEPARATORS = re.compile(r"[:\- ]")
# Explicit ASCII classes: str.isdigit-style checks would let Unicode digits through.
_HEX = re.compile(r"[0-9A-Fa-f]*")

# PICCDataTag bits (AN12196): bit 7 UID mirrored, bit 6 SDMReadCtr mirrored,
# bits 3..0 the UID length.
_TAG_UID_MIRRORED = 0x80
_TAG_COUNTER_MIRRORED = 0x40
_TAG_UID_LENGTH_MASK = 0x0F
_SUN_UID_BYTES = 7
_COUNTER_BYTES = 3
# SV2 prefix for the SDM session MAC key: label 3CC3, counter 0001, length 0080 (128 bits).
_SV2_PREFIX = bytes.fromhex("3CC300010080")


class InvalidSun(Exception):
    """A SUN message that is malformed or whose MAC does not check out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SunResult(msgspec.Struct, frozen=True, kw_only=True):
    """The tag identity and read counter proven by a SUN message."""

    uid: str
    counter: int


def normalize_uid(s: str) -> str:
    """Return a tag UID as upper-case hex without separators; raise ValueError if invalid."""
    compact = _UID_SEPARATORS.sub("", s)
    if not compact or not _HEX.fullmatch(compact) or len(compact) % 2:
        raise ValueError("NFC UID must be hexadecimal")
    if len(compact) // 2 not in UID_BYTE_LENGTHS:
        raise ValueError("NFC UID must be 4, 7 or 10 bytes")
    return compact.upper()


def _parse_hex(value: str, size: int, name: str) -> bytes:
    # bytes.fromhex alone would accept embedded whitespace.
    if len(value) != 2 * size or not _HEX.fullmatch(value):
        raise InvalidSun(f"malformed_{name}")
    return bytes.fromhex(value)


def _check_key(key: bytes, name: str) -> None:
    # A key of the wrong size is a configuration error, not a bad scan.
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes (AES-128)")


def _cmac(key: bytes, message: bytes) -> bytes:
    mac = CMAC(algorithms.AES(key))
    mac.update(message)
    return mac.finalize()


def verify_sun(
    picc_data_hex: str, cmac_hex: str, meta_read_key: bytes, file_read_key: bytes
) -> SunResult:
    """Decrypt PICCData and check the SUN MAC; raise InvalidSun unless the tag made it."""
    _check_key(meta_read_key, "meta_read_key")
    _check_key(file_read_key, "file_read_key")
    encrypted = _parse_hex(picc_data_hex, PICC_DATA_BYTES, "picc_data")
    received_mac = _parse_hex(cmac_hex, SUN_MAC_BYTES, "cmac")

    # One block, zero IV, as the tag encrypts it.
    decryptor = Cipher(algorithms.AES(meta_read_key), modes.CBC(bytes(16))).decryptor()
    plain = decryptor.update(encrypted) + decryptor.finalize()

    # Under a wrong meta-read key the tag byte is noise; refusing here gives a clearer reason,
    # while the MAC below is what actually stops forgeries.
    tag = plain[0]
    if not (tag & _TAG_UID_MIRRORED and tag & _TAG_COUNTER_MIRRORED):
        raise InvalidSun("picc_data_not_decrypted")
    if tag & _TAG_UID_LENGTH_MASK != _SUN_UID_BYTES:
        raise InvalidSun("picc_data_not_decrypted")
    uid = plain[1 : 1 + _SUN_UID_BYTES]
    counter_le = plain[1 + _SUN_UID_BYTES : 1 + _SUN_UID_BYTES + _COUNTER_BYTES]

    session_mac_key = _cmac(file_read_key, _SV2_PREFIX + uid + counter_le)
    # No encrypted file data is mirrored, so the MAC covers the empty message.
    full_mac = _cmac(session_mac_key, b"")
    expected_mac = full_mac[1::2]
    if not hmac.compare_digest(expected_mac, received_mac):
        raise InvalidSun("bad_cmac")
    return SunResult(uid=uid.hex().upper(), counter=int.from_bytes(counter_le, "little"))


def is_replay(counter: int, last_counter: int | None) -> bool:
    """Tell whether a SUN counter fails to exceed the last accepted one for its tag."""
    return last_counter is not None and counter <= last_counter
