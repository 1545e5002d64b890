"""Device payloads: the event contract, status, telemetry, and every dead-letter reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mqtt_bridge.errors import BadMessage
from mqtt_bridge.payloads import (
    DeviceEvent,
    DeviceStatus,
    Telemetry,
    parse_event,
    parse_message,
    parse_status,
    parse_telemetry,
)
from mqtt_bridge.topics import Topic, TopicKind, parse_topic

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
EVT = Topic("SH-001", "gw-1", "leak-3", "evt")
STATUS = Topic("SH-001", "gw-1", "leak-3", "status")
TELE = Topic("SH-001", "gw-1", "leak-3", "tele")
EVENT_ID = "0b0e9a2e-8c1a-4f57-9a58-2a7f6f0d4c11"


def event(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "v": 1,
        "event_id": EVENT_ID,
        "device_id": "leak-3",
        "boot": 17,
        "seq": 1234,
        "ts": "2025-03-01T19:59:58+08:00",
        "type": "water_leak",
        "state": "active",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def raw(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


def refused(parse: Any, topic: Topic, payload: bytes, **kwargs: Any) -> BadMessage:
    with pytest.raises(BadMessage) as info:
        parse(topic, payload, now=NOW, **kwargs)
    return info.value


# --- events ------------------------------------------------------------------------------


def test_parses_the_contract_example() -> None:
    parsed = parse_event(
        EVT,
        raw(event(severity="major", data={"zone": "B2"}, battery=87, rssi=-71)),
        now=NOW,
    )
    assert parsed == DeviceEvent(
        v=1,
        event_id=UUID(EVENT_ID),
        device_id="leak-3",
        boot=17,
        seq=1234,
        ts=datetime(2025, 3, 1, 19, 59, 58, tzinfo=timezone(timedelta(hours=8))),
        type="water_leak",
        state="active",
        severity="major",
        data={"zone": "B2"},
        battery=87,
        rssi=-71,
    )


def test_optional_fields_default_and_unknown_fields_are_ignored() -> None:
    parsed = parse_event(EVT, raw(event(state="clear", firmware="2.1", extra={"a": 1})), now=NOW)
    assert parsed.state == "clear"
    assert (parsed.severity, parsed.data, parsed.battery, parsed.rssi) == (None, {}, None, None)


def test_encodes_back_to_the_contract_shape() -> None:
    parsed = parse_event(EVT, raw(event()), now=NOW)
    assert msgspec.json.decode(msgspec.json.encode(parsed)) == event()


def test_past_timestamps_are_fine() -> None:
    # Devices buffer events while offline.
    parsed = parse_event(EVT, raw(event(ts="2020-01-01T00:00:00Z")), now=NOW)
    assert parsed.ts == datetime(2020, 1, 1, tzinfo=UTC)


def test_timestamp_up_to_max_future_is_accepted() -> None:
    at_limit = (NOW + timedelta(minutes=5)).isoformat()
    assert parse_event(EVT, raw(event(ts=at_limit)), now=NOW).ts == NOW + timedelta(minutes=5)


def test_future_timestamp() -> None:
    ahead = (NOW + timedelta(minutes=5, seconds=1)).isoformat()
    assert refused(parse_event, EVT, raw(event(ts=ahead))).reason == "future_timestamp"


def test_max_future_is_configurable() -> None:
    ahead = (NOW + timedelta(minutes=1)).isoformat()
    error = refused(parse_event, EVT, raw(event(ts=ahead)), max_future=timedelta(seconds=30))
    assert error.reason == "future_timestamp"


def test_too_large() -> None:
    payload = raw(event(data={"blob": "x" * 20000}))
    assert refused(parse_event, EVT, payload).reason == "too_large"
    assert parse_event(EVT, payload, now=NOW, max_bytes=len(payload)).data["blob"]


def test_empty_payload() -> None:
    assert refused(parse_event, EVT, b"").reason == "empty_payload"


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'{"v":1',
        b"\xff\xfe{}",
        b'{"v":1,"device_id":"\xff"}',
        raw(event())[:-1] + b", }",
        raw(event()) + b" trailing",
        b'{"data":{"x":' + b"[" * 5000 + b"]" * 5000 + b"}}",
    ],
)
def test_bad_json(payload: bytes) -> None:
    assert refused(parse_event, EVT, payload).reason == "bad_json"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event(boot=_DROP), "boot"),
        (event(seq=-1), "$.seq"),
        (event(boot=2**63), "$.boot"),
        (event(seq="12"), "$.seq"),
        (event(event_id="not-a-uuid"), "$.event_id"),
        (event(ts="2025-03-01T12:00:00"), "$.ts"),
        (event(ts="yesterday"), "$.ts"),
        (event(ts=1740830400), "$.ts"),
        (event(type="Water Leak"), "$.type"),
        (event(type="water_leak\n"), "$.type"),
        (event(type=""), "$.type"),
        (event(type="x" * 65), "$.type"),
        (event(state="on"), "$.state"),
        (event(severity="urgent"), "$.severity"),
        (event(data=[1, 2]), "$.data"),
        (event(battery=101), "$.battery"),
        (event(battery=-1), "$.battery"),
        (event(battery=87.5), "$.battery"),
        (event(rssi="weak"), "$.rssi"),
        (event(v="1"), "$.v"),
        (event(v=True), "$.v"),
        (event(device_id=None), "$.device_id"),
        ([event()], "array"),
        ("online", "str"),
    ],
)
def test_bad_schema_names_the_field(body: Any, field: str) -> None:
    error = refused(parse_event, EVT, raw(body))
    assert error.reason == "bad_schema"
    assert field in error.detail


def test_topic_mismatch() -> None:
    error = refused(parse_event, EVT, raw(event(device_id="leak-4")))
    assert error.reason == "topic_mismatch"
    assert "leak-4" in error.detail
    assert "leak-3" in error.detail


@pytest.mark.parametrize(
    "body",
    [event(v=2), event(v=0), event(v=2, seq="renamed", state="on"), event(v=2, boot=_DROP)],
)
def test_unsupported_version(body: dict[str, Any]) -> None:
    assert refused(parse_event, EVT, raw(body)).reason == "unsupported_version"


def test_missing_version_is_a_schema_error() -> None:
    error = refused(parse_event, EVT, raw(event(v=_DROP)))
    assert error.reason == "bad_schema"
    assert "`v`" in error.detail


def test_detail_is_kept_short() -> None:
    error = refused(parse_event, EVT, raw(event(state="x" * 5000)))
    assert error.reason == "bad_schema"
    assert len(error.detail) < 300


def test_caller_mistakes_are_not_dead_letters() -> None:
    with pytest.raises(ValueError, match="aware"):
        parse_event(EVT, raw(event()), now=datetime(2025, 3, 1, 12))
    with pytest.raises(ValueError, match="status"):
        parse_event(STATUS, raw(event()), now=NOW)


# --- status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "state"),
    [
        (b"online", "online"),
        (b"offline", "offline"),
        (b"offline\n", "offline"),
        (b" ONLINE ", "online"),
        (b'"offline"', "offline"),
    ],
)
def test_plain_status(payload: bytes, state: str) -> None:
    assert parse_status(STATUS, payload, now=NOW) == DeviceStatus(state=state)  # type: ignore[arg-type]


def test_status_object() -> None:
    payload = raw({"state": "offline", "boot": 17, "seq": 90, "ts": "2025-03-01T11:59:00Z", "x": 1})
    assert parse_status(STATUS, payload, now=NOW) == DeviceStatus(
        state="offline", boot=17, seq=90, ts=datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
    )


def test_status_object_with_state_only() -> None:
    assert parse_status(STATUS, b'{"state":"online"}', now=NOW) == DeviceStatus(state="online")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty_payload"),
        (b"maybe", "bad_json"),
        (b"\xff", "bad_json"),
        (b'"sleeping"', "bad_schema"),
        (b'{"state":"sleeping"}', "bad_schema"),
        (b'{"boot":1}', "bad_schema"),
        (b'{"state":"online","seq":-5}', "bad_schema"),
        (b'{"state":"online","ts":"2025-03-01T12:00:00"}', "bad_schema"),
        (b'{"state":"online","ts":"2025-03-02T12:00:00Z"}', "future_timestamp"),
        (b'{"state":"online","pad":"' + b"x" * 2000 + b'"}', "too_large"),
    ],
)
def test_bad_status(payload: bytes, why: str) -> None:
    assert refused(parse_status, STATUS, payload).reason == why


def test_status_names_the_field() -> None:
    assert "$.seq" in refused(parse_status, STATUS, b'{"state":"online","seq":"x"}').detail


# --- telemetry ---------------------------------------------------------------------------


def test_telemetry_with_ts() -> None:
    payload = b'{"ts":"2025-03-01T11:59:00Z","temperature":21.5,"humidity":40,"power.w":-3e2}'
    assert parse_telemetry(TELE, payload, now=NOW) == Telemetry(
        readings={"temperature": 21.5, "humidity": 40.0, "power.w": -300.0},
        ts=datetime(2025, 3, 1, 11, 59, tzinfo=UTC),
    )


def test_telemetry_without_ts() -> None:
    parsed = parse_telemetry(TELE, b'{"temperature": 7}', now=NOW)
    assert parsed.ts is None
    assert parsed.readings == {"temperature": 7.0}
    assert isinstance(parsed.readings["temperature"], float)


@pytest.mark.parametrize(
    ("payload", "why", "where"),
    [
        (b"", "empty_payload", ""),
        (b"21.5", "bad_schema", "object"),
        (b"[1,2]", "bad_schema", "object"),
        (b"{}", "bad_schema", "no readings"),
        (b'{"ts":"2025-03-01T11:59:00Z"}', "bad_schema", "no readings"),
        (b'{"t":true}', "bad_schema", "$.t"),
        (b'{"t":null}', "bad_schema", "$.t"),
        (b'{"t":"21.5"}', "bad_schema", "$.t"),
        (b'{"t":{"c":1}}', "bad_schema", "$.t"),
        (b'{"t":1e400}', "bad_schema", ""),
        (b'{"bad name":1}', "bad_schema", "bad name"),
        (b'{"t":1,"ts":"soon"}', "bad_schema", "$.ts"),
        (b'{"t":1,"ts":1740830400}', "bad_schema", "$.ts"),
        (b'{"t":1,"ts":"2025-03-01T12:00:00"}', "bad_schema", "$.ts"),
        (b'{"t":1,"ts":"2025-03-01T12:06:00Z"}', "future_timestamp", ""),
        (b'{"t":1', "bad_json", ""),
        (b'{"t":1,"x":"' + b"y" * 17000 + b'"}', "too_large", ""),
    ],
)
def test_bad_telemetry(payload: bytes, why: str, where: str) -> None:
    error = refused(parse_telemetry, TELE, payload)
    assert error.reason == why
    assert where in error.detail


# --- dispatch and robustness -------------------------------------------------------------


def test_parse_message_dispatches_by_kind() -> None:
    assert isinstance(parse_message(EVT, raw(event()), now=NOW), DeviceEvent)
    assert isinstance(parse_message(STATUS, b"online", now=NOW), DeviceStatus)
    assert isinstance(parse_message(TELE, b'{"t":1}', now=NOW), Telemetry)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = st.sampled_from(
    ["v", "event_id", "device_id", "boot", "seq", "ts", "type", "state", "severity",
     "data", "battery", "rssi", "temperature", "t"]
)  # fmt: skip
NEAR_VALID = st.builds(
    lambda base, changes: {**base, **changes},
    st.sampled_from([event(), {"state": "online", "seq": 3}, {"temperature": 1.5}]),
    st.dictionaries(FIELDS, JSON | st.sampled_from([EVENT_ID, "leak-3", NOW.isoformat()])),
)
TOPICS = st.one_of(
    st.text(),
    st.builds(
        lambda kind, device: f"estateops/v1/SH-001/gw-1/{device}/{kind}",
        st.sampled_from(["evt", "status", "tele", "cmd"]),
        st.sampled_from(["leak-3", "x"]) | st.text(max_size=3),
    ),
)
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    JSON.map(raw),
    NEAR_VALID.map(raw),
    st.sampled_from([b"online", b"offline", b"{}", b"[]", b"null"]),
)
NOWS = st.datetimes(timezones=st.just(UTC)) | st.just(NOW)


PARSERS: dict[TopicKind, Callable[..., object]] = {
    "evt": parse_event,
    "status": parse_status,
    "tele": parse_telemetry,
}


def outcome(call: Callable[[], object]) -> object:
    """What a call gave back, or the BadMessage it raised (any other exception escapes)."""
    try:
        return call()
    except BadMessage as error:
        return error


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(TOPICS, PAYLOADS, NOWS)
def test_parsers_return_a_value_or_raise_bad_message(
    topic_string: str, payload: bytes, now: datetime
) -> None:
    parsed = outcome(lambda: parse_topic(topic_string))
    if isinstance(parsed, BadMessage):
        assert parsed.reason in {"bad_topic", "unsupported_version"}
    topic = parsed if isinstance(parsed, Topic) else EVT
    # Every parser sees the payload, whatever the topic's own kind.
    for kind, parse in PARSERS.items():
        typed = Topic(topic.site_code, topic.gateway_id, topic.device_id, kind)
        result = outcome(lambda: parse(typed, payload, now=now))  # noqa: B023
        if isinstance(result, BadMessage):
            assert result.reason
            assert result.detail
        else:
            assert isinstance(result, DeviceEvent | DeviceStatus | Telemetry)
