"""Signed checkpoint QR tokens.

A token reads ``v1.<key_id>.<site_id>.<checkpoint_id>.<token_version>.<sig>``, where
``sig`` is the unpadded base64url of HMAC-SHA256 over everything before the last dot,
truncated to 16 bytes so the printed code stays small (128 bits is ample against
forgery because every guess has to go through the server).

Verification proves only that the server issued the token with a key it still holds.
Two checks belong to the caller, who knows the database state:

* revocation: refuse the scan unless ``claims.token_version`` equals the checkpoint's
  current token version (reprinting a code bumps the version and kills the old sticker);
* site: refuse the scan unless ``claims.site_id`` is the site of the round being
  walked, and the checkpoint really belongs to that site.
"""

from __future__ import annotations

import base64
import hmac
import re
from collections.abc import Mapping
from types import MappingProxyType

import msgspec

__all__ = ["InvalidQrToken", "QrClaims", "QrKeyRing", "sign", "verify"]

VERSION = "v1"
SIG_BYTES = 16
MIN_SECRET_BYTES = 16
MAX_KEY_ID_LEN = 16
# Database ids are bigint; anything larger cannot name a real row.
MAX_ID = 2**63 - 1

_KEY_ID = re.compile(rf"[a-z0-9]{{1,{MAX_KEY_ID_LEN}}}")
# Canonical decimal only: no sign, no leading zeros, no Unicode digits, at most bigint width.
_NUMBER = r"(?:0|[1-9][0-9]{0,18})"
_SIG_LEN = len(base64.urlsafe_b64encode(bytes(SIG_BYTES)).rstrip(b"="))
_TOKEN = re.compile(
    rf"(?P<body>v1\.(?P<key_id>[a-z0-9]{{1,{MAX_KEY_ID_LEN}}})"
    rf"\.(?P<site_id>{_NUMBER})\.(?P<checkpoint_id>{_NUMBER})\.(?P<token_version>{_NUMBER}))"
    rf"\.(?P<sig>[A-Za-z0-9_-]{{{_SIG_LEN}}})"
)
# A later format ("v2.") gets its own reason so old servers say why they refuse it.
_OTHER_VERSION = re.compile(r"(v[0-9]{1,3})\.")
# Longest well-formed token; lets garbage be refused before any regex work.
_MAX_TOKEN_LEN = len(VERSION) + 1 + MAX_KEY_ID_LEN + 3 * (1 + 19) + 1 + _SIG_LEN


class InvalidQrToken(Exception):
    """A QR token that is malformed, signed with an unknown key, or forged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QrClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What a verified QR token asserts; the caller still checks site and version."""

    site_id: int
    checkpoint_id: int
    token_version: int
    key_id: str


class QrKeyRing:
    """HMAC keys by id; new tokens use ``current``, any key in the ring verifies."""

    __slots__ = ("_current", "_keys")

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        for key_id, secret in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ValueError(f"QR key id must match [a-z0-9]{{1,{MAX_KEY_ID_LEN}}}")
            if len(secret) < MIN_SECRET_BYTES:
                raise ValueError(f"QR key {key_id!r} is shorter than {MIN_SECRET_BYTES} bytes")
        if current not in keys:
            raise ValueError(f"current QR key {current!r} is not in the key ring")
        self._keys: Mapping[str, bytes] = MappingProxyType(
            {key_id: bytes(secret) for key_id, secret in keys.items()}
        )
        self._current = current

    @property
    def current(self) -> str:
        """Id of the key that signs new tokens."""
        return self._current

    def key_ids(self) -> frozenset[str]:
        """Ids of every key that still verifies."""
        return frozenset(self._keys)

    def secret(self, key_id: str) -> bytes | None:
        """The secret for ``key_id``, or None when it has been retired."""
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        # Never show secrets in logs or tracebacks.
        return f"QrKeyRing(current={self._current!r}, key_ids={sorted(self._keys)!r})"


def _signature(secret: bytes, body: str) -> str:
    digest = hmac.digest(secret, body.encode("ascii"), "sha256")[:SIG_BYTES]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _check_id(name: str, value: int, minimum: int) -> None:
    # bool is an int subclass; True as a checkpoint id is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not minimum <= value <= MAX_ID:
        raise ValueError(f"{name} must be between {minimum} and {MAX_ID}")


def sign(ring: QrKeyRing, site_id: int, checkpoint_id: int, token_version: int) -> str:
    """Issue the QR token for a checkpoint with the ring's current key."""
    _check_id("site_id", site_id, 1)
    _check_id("checkpoint_id", checkpoint_id, 1)
    _check_id("token_version", token_version, 0)
    key_id = ring.current
    secret = ring.secret(key_id)
    assert secret is not None  # the ring guarantees its current key exists
    body = f"{VERSION}.{key_id}.{site_id}.{checkpoint_id}.{token_version}"
    return f"{body}.{_signature(secret, body)}"


def verify(ring: QrKeyRing, token: str) -> QrClaims:
    """Check a scanned token's form and signature; raise InvalidQrToken if it fails."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LEN:
        raise InvalidQrToken("malformed")
    match = _TOKEN.fullmatch(token)
    if match is None:
        other = _OTHER_VERSION.match(token)
        if other is not None and other[1] != VERSION:
            raise InvalidQrToken("unsupported_version")
        raise InvalidQrToken("malformed")
    site_id = int(match["site_id"])
    checkpoint_id = int(match["checkpoint_id"])
    token_version = int(match["token_version"])
    # sign() never issues these, so refuse them before spending an HMAC.
    if not (1 <= site_id <= MAX_ID and 1 <= checkpoint_id <= MAX_ID and token_version <= MAX_ID):
        raise InvalidQrToken("malformed")
    key_id = match["key_id"]
    secret = ring.secret(key_id)
    if secret is None:
        raise InvalidQrToken("unknown_key")
    # Compare the encoded text, not decoded bytes: base64 ignores the last character's
    # low bits, and accepting several spellings of one signature would make tokens malleable.
    expected = _signature(secret, match["body"])
    if not hmac.compare_digest(expected.encode("ascii"), match["sig"].encode("ascii")):
        raise InvalidQrToken("bad_signature")
    return QrClaims(
        site_id=site_id,
        checkpoint_id=checkpoint_id,
        token_version=token_version,
        key_id=key_id,
    )
