"""Webhook signatures (HMAC-SHA256 over "timestamp.body") and the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

import pytest

from server.notifications.signing import (
    MAX_ATTEMPTS,
    new_secret,
    retry_after,
    retry_delay,
    seal_context,
    sign,
    verify,
)


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    body = b'{"event":"incident.opened"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("whsec_k", 1700000000, body) == f"sha256={expected}"


def test_a_receiver_accepts_only_a_matching_recent_signature() -> None:
    secret, body, ts = new_secret(), b"{}", 1700000000
    good = sign(secret, ts, body)
    assert verify(secret, str(ts), body, good, now=ts + 10)
    assert not verify(secret, str(ts), body + b"\n", good, now=ts)  # body changed
    assert not verify(secret, str(ts + 1), body, good, now=ts)  # timestamp changed
    assert not verify(new_secret(), str(ts), body, good, now=ts)  # another key
    assert not verify(secret, str(ts), body, good, now=ts + 301)  # too old: a replay
    assert not verify(secret, None, body, good, now=ts)
    assert not verify(secret, "-1", body, good, now=ts)
    assert not verify(secret, str(ts), body, None, now=ts)


def test_secrets_are_fresh_and_sealed_to_their_endpoint() -> None:
    assert new_secret() != new_secret()
    assert len(new_secret()) > 40
    assert seal_context(1, 2) != seal_context(12, 0)


def test_retries_back_off_exponentially_up_to_an_hour() -> None:
    delays = [retry_delay(n) for n in range(1, MAX_ATTEMPTS + 3)]
    assert delays[:5] == [timedelta(seconds=s) for s in (30, 60, 120, 240, 480)]
    assert max(delays) == timedelta(hours=1)
    assert delays == sorted(delays)
    assert sum(delays[: MAX_ATTEMPTS - 1], timedelta()) < timedelta(hours=4)
    with pytest.raises(ValueError):
        retry_delay(0)
    assert retry_delay(10_000) == timedelta(hours=1)


def test_retry_after_in_seconds_is_honoured_within_bounds() -> None:
    assert retry_after("120") == timedelta(minutes=2)
    assert retry_after(" 7 ") == timedelta(seconds=7)
    assert retry_after("999999") == timedelta(hours=1)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert retry_after(None) is None
