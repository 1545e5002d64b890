"""Emergency playbooks: steps per kind, escalation, alarm mapping, locale negotiation."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.incidents.playbooks import (
    INCIDENT_KINDS,
    LOCALES,
    PLAYBOOKS,
    Playbook,
    PlaybookStep,
    Text,
    alarm_incident_kind,
    escalation_chain,
    incident_title,
    negotiate_locale,
    playbook,
    render_notice,
)

ROLES = {"technician", "guard", "supervisor", "manager", "front_desk"}


def keys(kind: str) -> list[str]:
    return [step.key for step in playbook(kind).steps]


def zh_texts(kind: str) -> str:
    return " ".join(step.text.zh for step in playbook(kind).steps)


def test_every_kind_has_a_playbook() -> None:
    assert set(PLAYBOOKS) == set(INCIDENT_KINDS)
    assert set(INCIDENT_KINDS) >= {
        "water_leak",
        "pipe_burst",
        "power_outage",
        "fire",
        "theft",
        "device_offline",
    }


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_every_step_is_complete_in_both_languages(kind: str) -> None:
    book = PLAYBOOKS[kind]  # type: ignore[index]
    assert book.kind == kind
    assert book.steps
    assert len({step.key for step in book.steps}) == len(book.steps)
    for text in (book.title, book.notice, *(step.text for step in book.steps)):
        for locale in LOCALES:
            assert text.in_locale(locale).strip()
        assert any("\u4e00" <= char <= "\u9fff" for char in text.zh), text.zh
        assert text.en.isascii(), text.en
    for step in book.steps:
        assert step.role in ROLES
        assert step.ack_minutes > 0
        assert step.ack_deadline == timedelta(minutes=step.ack_minutes)


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_every_repair_step_has_a_ticket_category(kind: str) -> None:
    for step in playbook(kind).steps:
        assert step.opens_ticket == (step.ticket_category is not None)


def test_repair_steps_open_tickets_of_the_right_trade() -> None:
    def tickets(kind: str) -> dict[str, str | None]:
        return {s.key: s.ticket_category for s in playbook(kind).steps if s.opens_ticket}

    assert tickets("pipe_burst") == {"repair_and_restore": "plumbing"}
    assert tickets("water_leak") == {"repair_and_restore": "plumbing"}
    assert tickets("power_outage") == {"find_cause": "electrical"}
    assert tickets("fire") == {}
    assert tickets("theft") == {}
    assert list(tickets("device_offline").values()) == ["low_voltage"]


def test_a_ticket_category_goes_with_opens_ticket() -> None:
    with pytest.raises(ValueError, match="category"):
        PlaybookStep(
            key="x", role="technician", ack_minutes=5, text=Text("x", "x"), opens_ticket=True
        )
    with pytest.raises(ValueError, match="category"):
        PlaybookStep(
            key="x",
            role="technician",
            ack_minutes=5,
            text=Text("x", "x"),
            ticket_category="plumbing",
        )
    with pytest.raises(ValueError, match="positive"):
        PlaybookStep(key="x", role="guard", ack_minutes=0, text=Text("x", "x"))


def test_steps_follow_the_service_standard() -> None:
    assert keys("pipe_burst") == [
        "close_main_valve",
        "notify",
        "temporary_measures",
        "repair_and_restore",
    ]
    assert keys("water_leak") == keys("pipe_burst")
    assert keys("power_outage") == [
        "notify_residents",
        "find_cause",
        "restore_critical_loads",
        "temporary_lighting",
    ]
    assert keys("fire") == [
        "alarm_and_evacuate",
        "first_response_extinguishing",
        "guide_evacuation",
        "assist_fire_brigade",
    ]
    assert keys("theft") == ["call_police", "protect_scene", "seal_area", "notify_owners"]


@pytest.mark.parametrize(
    ("kind", "terms"),
    [
        ("pipe_burst", ["关闭总阀", "挡水板", "恢复供水"]),
        ("power_outage", ["预计恢复时间", "优先恢复电梯、消防等关键负荷", "临时照明/备用电源"]),
        ("fire", ["报警并疏散", "初期灭火", "疏散指引", "配合消防"]),
        ("theft", ["报警", "保护现场", "封锁区域", "告知业主"]),
    ],
)
def test_steps_use_the_standards_chinese_terms(kind: str, terms: list[str]) -> None:
    for term in terms:
        assert term in zh_texts(kind)


def test_fire_and_water_are_acknowledged_in_minutes() -> None:
    assert playbook("fire").steps[0].ack_minutes <= 5
    assert playbook("pipe_burst").steps[0].ack_minutes <= 5
    assert playbook("pipe_burst").steps[0].role == "technician"
    for kind in ("fire", "water_leak", "pipe_burst"):
        assert max(step.ack_minutes for step in playbook(kind).steps) <= 30


def test_smoke_is_fire() -> None:
    assert playbook("smoke") is playbook("fire")
    assert incident_title("smoke", "zh-CN") == "火灾"


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="flood"):
        playbook("flood")


def test_titles() -> None:
    assert incident_title("pipe_burst", "zh-CN") == "水管爆裂"
    assert incident_title("power_outage", "en") == "Power outage"


def test_playbooks_encode_with_locale_keys() -> None:
    encoded = msgspec.to_builtins(playbook("theft"))
    assert encoded["title"] == {"zh-CN": "盗窃", "en": "Theft"}
    assert msgspec.convert(encoded, Playbook) == playbook("theft")


# --- notices -----------------------------------------------------------------------------

SINCE = datetime(2025, 7, 1, 21, 5)


def test_power_notice_gives_the_expected_restoration_time() -> None:
    zh = render_notice(
        "power_outage",
        "zh-CN",
        site="阳光花园",
        location="3号楼",
        since=SINCE,
        eta=datetime(2025, 7, 1, 23, 30),
    )
    assert "阳光花园3号楼" in zh
    assert "2025-07-01 21:05" in zh
    assert "预计恢复时间：2025-07-01 23:30" in zh
    en = render_notice("power_outage", "en", site="Sunny Court", location=None, since=SINCE)
    assert "Sunny Court since 2025-07-01 21:05" in en
    assert "to be confirmed" in en


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
@pytest.mark.parametrize("locale", LOCALES)
def test_every_notice_renders(kind: str, locale: str) -> None:
    text = render_notice(kind, locale, site="S{0}", location="{x}", since=SINCE)  # type: ignore[arg-type]
    assert "S{0}" in text  # values are not format strings
    assert "{where}" not in text
    assert "{since}" not in text
    assert "{eta}" not in text


# --- escalation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "chain"),
    [
        ("technician", ("technician", "supervisor", "manager")),
        ("guard", ("guard", "supervisor", "manager")),
        ("front_desk", ("front_desk", "supervisor", "manager")),
        ("supervisor", ("supervisor", "manager")),
        ("manager", ("manager",)),
    ],
)
def test_escalation_chain(role: str, chain: tuple[str, ...]) -> None:
    assert escalation_chain(role) == chain


def test_escalation_of_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="cleaner"):
        escalation_chain("cleaner")


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_every_step_escalates_to_the_manager(kind: str) -> None:
    for step in playbook(kind).steps:
        chain = escalation_chain(step.role)
        assert chain[0] == step.role
        assert chain[-1] == "manager"


# --- alarms to incidents -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("alarm_type", "kind"),
    [
        ("water_leak", "water_leak"),
        ("leak", "water_leak"),
        ("Water-Leak", "water_leak"),
        ("pipe_burst", "pipe_burst"),
        ("smoke", "fire"),
        ("fire", "fire"),
        ("power_loss", "power_outage"),
        ("power", "power_outage"),
        ("intrusion", "theft"),
        ("door_forced", "theft"),
        ("gateway_offline", "device_offline"),
        ("temperature", None),
        ("low_battery", None),
        ("door_open", None),
        ("", None),
    ],
)
def test_alarm_incident_kind(alarm_type: str, kind: str | None) -> None:
    assert alarm_incident_kind(alarm_type) == kind


def test_every_alarm_kind_has_a_playbook() -> None:
    for alarm_type in ("leak", "smoke", "power", "intrusion", "offline"):
        kind = alarm_incident_kind(alarm_type)
        assert kind is not None
        assert playbook(kind).kind == kind


# --- locale ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        ("zh", "en", "zh-CN"),
        ("zh-CN;q=0.9,en;q=0.8", "en", "zh-CN"),
        ("en-US", "zh-CN", "en"),
        ("en-US,en;q=0.9", "zh-CN", "en"),
        ("en;q=0.5, zh-Hans-CN;q=0.9", "en", "zh-CN"),
        ("fr-FR, en;q=0.1", "zh-CN", "en"),
        ("fr-FR, de", "en", "en"),
        ("*", "zh-CN", "zh-CN"),
        ("*", "en", "en"),
        ("en;q=0.2, *;q=0.9", "en", "zh-CN"),  # `*` means the languages not named
        ("zh;q=0, *", "zh-CN", "en"),
        ("en;q=0", "en", "en"),  # nothing acceptable: fall back to the site's locale
        ("garbage", "zh-CN", "zh-CN"),
        ("!!!,;;;,q=1", "en", "en"),
        ("en;q=abc", "zh-CN", "zh-CN"),  # a bad q-value drops the entry
        ("en;q=1.5", "zh-CN", "zh-CN"),
        (" EN ; Q=0.8 ", "zh-CN", "en"),
        ("", "en", "en"),
        (None, "zh-CN", "zh-CN"),
        (None, "en", "en"),
        (None, "en-GB", "en"),
        (None, "fr", "zh-CN"),
    ],
)
def test_negotiate_locale(header: str | None, default: str, expected: str) -> None:
    assert negotiate_locale(header, default) == expected


@given(st.one_of(st.none(), st.text()), st.sampled_from(["zh-CN", "en"]))
def test_negotiate_locale_always_answers(header: str | None, default: str) -> None:
    assert negotiate_locale(header, default) in LOCALES
