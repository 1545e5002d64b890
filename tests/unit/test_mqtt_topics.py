"""MQTT topic scheme: parsing, its refusals, and the bridge's subscriptions."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_bridge.errors import BadMessage
from mqtt_bridge.topics import DEFAULT_PREFIX, Topic, parse_topic, subscriptions

SEGMENT = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-",
    min_size=1,
    max_size=64,
)


def reason(topic: str) -> str:
    with pytest.raises(BadMessage) as info:
        parse_topic(topic)
    return info.value.reason


def test_parses_an_event_topic() -> None:
    topic = parse_topic("estateops/v1/SH-001/gw_7/leak.03/evt")
    assert topic == Topic("SH-001", "gw_7", "leak.03", "evt")
    assert topic.via_gateway


@pytest.mark.parametrize("kind", ["evt", "status", "tele"])
def test_parses_every_kind(kind: str) -> None:
    assert parse_topic(f"estateops/v1/s/g/d/{kind}").kind == kind


def test_a_device_without_gateway_uses_its_own_id() -> None:
    assert not parse_topic("estateops/v1/s/gw1/gw1/status").via_gateway


def test_custom_prefix() -> None:
    topic = parse_topic("acme/estateops/v1/s/g/d/tele", prefix="acme/estateops/v1")
    assert topic.path("acme/estateops/v1") == "acme/estateops/v1/s/g/d/tele"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/",
        "estateops/v1",
        "estateops/v1/s/g/d",
        "estateops/v1/s/g/d/evt/extra",
        "estateops/v1/s/g/d/cmd",
        "estateops/v1/s/g/d/EVT",
        "estateops/v1/s//d/evt",
        "estateops/v1/s/g/d d/evt",
        "estateops/v1/s/g/d+/evt",
        "estateops/v1/s/g/#/evt",
        "estateops/v1/s/g/设备/evt",
        "estateops/v1/s/g/d\n/evt",
        "estateops/v1/" + "x" * 65 + "/g/d/evt",
        "other/v1/s/g/d/evt",
        "$share/g/estateops/v1/s/g/d/evt",
        "estateops/s/g/d/evt",
    ],
)
def test_refuses_bad_topics(topic: str) -> None:
    assert reason(topic) == "bad_topic"


def test_another_version_is_unsupported_not_bad() -> None:
    assert reason("estateops/v2/s/g/d/evt") == "unsupported_version"


def test_detail_names_the_segment() -> None:
    with pytest.raises(BadMessage) as info:
        parse_topic("estateops/v1/s/g w/d/evt")
    assert "gateway_id" in info.value.detail
    assert str(info.value).startswith("bad_topic: ")


def test_bad_message_pickles() -> None:
    error = BadMessage("bad_topic", "x")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.reason, copy.detail) == ("bad_topic", "x")


@given(SEGMENT, SEGMENT, SEGMENT, st.sampled_from(["evt", "status", "tele"]))
def test_path_round_trips(site: str, gateway: str, device: str, kind: str) -> None:
    topic = parse_topic(f"{DEFAULT_PREFIX}/{site}/{gateway}/{device}/{kind}")
    assert (topic.site_code, topic.gateway_id, topic.device_id, topic.kind) == (
        site,
        gateway,
        device,
        kind,
    )
    assert parse_topic(topic.path()) == topic


@given(st.text())
def test_any_string_parses_or_raises_bad_message(text: str) -> None:
    try:
        topic: Topic | BadMessage = parse_topic(text)
    except BadMessage as error:
        topic = error
    if isinstance(topic, Topic):
        assert topic.path() == text
    else:
        assert topic.reason in {"bad_topic", "unsupported_version"}


def test_subscriptions_without_group() -> None:
    assert subscriptions() == [
        ("estateops/v1/+/+/+/evt", 1),
        ("estateops/v1/+/+/+/tele", 0),
        ("estateops/v1/+/+/+/status", 1),
    ]


def test_subscriptions_with_group_keep_status_plain() -> None:
    subs = dict(subscriptions("estateops/v1", "bridges"))
    assert subs == {
        "$share/bridges/estateops/v1/+/+/+/evt": 1,
        "$share/bridges/estateops/v1/+/+/+/tele": 0,
        # Retained messages are not delivered to shared subscriptions.
        "estateops/v1/+/+/+/status": 1,
    }


@pytest.mark.parametrize("group", ["", "a/b", "a+", "#"])
def test_subscriptions_refuse_bad_group(group: str) -> None:
    with pytest.raises(ValueError, match="group"):
        subscriptions(shared_group=group)


@pytest.mark.parametrize("prefix", ["", "a//b", "a/+", "a/#", "$SYS", "/a"])
def test_subscriptions_refuse_bad_prefix(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        subscriptions(prefix)
