"""Emergency playbooks (应急预案) of the service standard, as data. Pure, no I/O.

Each incident kind has a title, a notice template and ordered steps. A step names the
role that must acknowledge it, how many minutes it has to do so, and, for repair work,
the category of the ticket it opens. Texts are in zh-CN (the terms staff and residents
use) and en; `negotiate_locale` picks one from an `Accept-Language` header.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal, TypeAlias

import msgspec

__all__ = [
    "INCIDENT_KINDS",
    "KIND_ALIASES",
    "LOCALES",
    "PLAYBOOKS",
    "IncidentKind",
    "Locale",
    "Playbook",
    "PlaybookStep",
    "Role",
    "Text",
    "TicketCategory",
    "alarm_incident_kind",
    "escalation_chain",
    "incident_title",
    "negotiate_locale",
    "playbook",
    "render_notice",
]

Locale: TypeAlias = Literal["zh-CN", "en"]
Role: TypeAlias = Literal["technician", "guard", "supervisor", "manager", "front_desk"]
IncidentKind: TypeAlias = Literal[
    "water_leak", "pipe_burst", "power_outage", "fire", "theft", "device_offline"
]
# Ticket categories opened by playbook steps; low_voltage is 弱电 (network, CCTV, IoT).
TicketCategory: TypeAlias = Literal["plumbing", "electrical", "low_voltage"]

LOCALES: Final[tuple[Locale, ...]] = ("zh-CN", "en")
INCIDENT_KINDS: Final[tuple[IncidentKind, ...]] = (
    "water_leak",
    "pipe_burst",
    "power_outage",
    "fire",
    "theft",
    "device_offline",
)
KIND_ALIASES: Final[Mapping[str, IncidentKind]] = MappingProxyType({"smoke": "fire"})


class Text(msgspec.Struct, frozen=True):
    """One text in both languages."""

    zh: str = msgspec.field(name="zh-CN")
    en: str

    def in_locale(self, locale: Locale) -> str:
        """The text in `locale`."""
        return self.zh if locale == "zh-CN" else self.en


class PlaybookStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a playbook; repair steps open a ticket of `ticket_category`."""

    key: str
    role: Role
    ack_minutes: int
    text: Text
    opens_ticket: bool = False
    ticket_category: TicketCategory | None = None

    def __post_init__(self) -> None:
        if self.ack_minutes <= 0:
            raise ValueError(f"step {self.key!r}: ack_minutes must be positive")
        if self.opens_ticket != (self.ticket_category is not None):
            raise ValueError(f"step {self.key!r}: a ticket category goes with opens_ticket")

    @property
    def ack_deadline(self) -> timedelta:
        """How long after the incident opens the step must be acknowledged."""
        return timedelta(minutes=self.ack_minutes)


class Playbook(msgspec.Struct, frozen=True, kw_only=True):
    """The playbook of one incident kind.

    `notice` is a template for residents (or staff, for device_offline) with the fields
    `{where}`, `{since}` and `{eta}`; fill it with `render_notice`.
    """

    kind: IncidentKind
    title: Text
    notice: Text
    steps: tuple[PlaybookStep, ...]


def _step(
    key: str,
    role: Role,
    ack_minutes: int,
    zh: str,
    en: str,
    ticket: TicketCategory | None = None,
) -> PlaybookStep:
    return PlaybookStep(
        key=key,
        role=role,
        ack_minutes=ack_minutes,
        text=Text(zh, en),
        opens_ticket=ticket is not None,
        ticket_category=ticket,
    )


# 水管爆裂 / 漏水: water damage spreads by the minute, so the valve comes first.
_WATER_STEPS: Final = (
    _step(
        "close_main_valve",
        "technician",
        5,
        "立即关闭总阀（或漏点上游阀门），止住漏水。",
        "Close the main valve (or the valve upstream of the leak) at once.",
    ),
    _step(
        "notify",
        "front_desk",
        10,
        "通知维修人员和受影响的住户，说明影响范围和停水安排。",
        "Tell the maintenance staff and the affected residents what is affected and "
        "that the water is off.",
    ),
    _step(
        "temporary_measures",
        "guard",
        15,
        "采取临时措施：放置挡水板、沙袋，防止水流进电梯井和配电设备。",
        "Put temporary measures in place: water barriers and sandbags; keep water away "
        "from elevator shafts and electrical equipment.",
    ),
    _step(
        "repair_and_restore",
        "technician",
        30,
        "尽快修复并恢复供水，记录维修时间、内容和人员。",
        "Repair quickly and restore the water supply; record when, what and who.",
        ticket="plumbing",
    ),
)

_PLAYBOOK_LIST: Final = (
    Playbook(
        kind="water_leak",
        title=Text("漏水", "Water leak"),
        notice=Text(
            "【漏水通知】{where}发现漏水，物业已关闭相关阀门并安排维修，可能暂时停水。"
            "开始时间：{since}。给您带来不便，敬请谅解。",
            "[Water leak] A leak was found at {where}. We have closed the valves and a "
            "repair is under way; the water may be off for a while. Since: {since}.",
        ),
        steps=_WATER_STEPS,
    ),
    Playbook(
        kind="pipe_burst",
        title=Text("水管爆裂", "Burst pipe"),
        notice=Text(
            "【停水通知】{where}水管爆裂，物业已关闭总阀并正在抢修，暂时停水。"
            "开始时间：{since}，预计恢复供水时间：{eta}。",
            "[Water off] A pipe burst at {where}. We have closed the main valve and are "
            "repairing it; the water is off. Since: {since}. Expected back: {eta}.",
        ),
        steps=_WATER_STEPS,
    ),
    Playbook(
        kind="power_outage",
        title=Text("停电", "Power outage"),
        notice=Text(
            "【停电通知】{where}自{since}起停电，物业正在排查原因，"
            "优先恢复电梯、消防等关键负荷。预计恢复时间：{eta}。",
            "[Power outage] The power is off at {where} since {since}. We are finding the "
            "cause and restoring elevators and fire systems first. Expected back: {eta}.",
        ),
        steps=(
            _step(
                "notify_residents",
                "front_desk",
                15,
                "通知住户（公告、短信），告知预计恢复时间。",
                "Tell the residents (notice board, SMS) and give the expected restoration time.",
            ),
            _step(
                "find_cause",
                "technician",
                10,
                "排查停电原因（市政停电或内部故障），必要时联系供电部门。",
                "Find the cause (grid outage or a fault in the building); call the power "
                "company if needed.",
                ticket="electrical",
            ),
            _step(
                "restore_critical_loads",
                "technician",
                15,
                "优先恢复电梯、消防等关键负荷，确认电梯内无人被困。",
                "Restore critical loads first (elevators, fire systems); make sure nobody "
                "is trapped in an elevator.",
            ),
            _step(
                "temporary_lighting",
                "guard",
                10,
                "临时照明/备用电源：在楼梯间、出入口提供临时照明，必要时启用备用电源。",
                "Temporary lighting or backup power: light the stairwells and entrances, "
                "start the backup power if needed.",
            ),
        ),
    ),
    Playbook(
        kind="fire",
        title=Text("火灾", "Fire"),
        notice=Text(
            "【火警】{where}发生火情，请勿乘坐电梯，听从工作人员指引，沿疏散通道从安全出口撤离。",
            "[Fire] A fire was reported at {where}. Do not use the elevators; follow the "
            "staff and the evacuation routes to the emergency exits.",
        ),
        steps=(
            _step(
                "alarm_and_evacuate",
                "guard",
                2,
                "报警并疏散：拨打119，启动火灾警报，组织人员撤离。",
                "Raise the alarm and evacuate: call 119, sound the fire alarm, get people out.",
            ),
            _step(
                "first_response_extinguishing",
                "guard",
                3,
                "初期灭火：在确保安全的前提下，使用灭火器、消火栓扑救初起火灾。",
                "First-response extinguishing: where it is safe, fight the fire with "
                "extinguishers and hose reels.",
            ),
            _step(
                "guide_evacuation",
                "guard",
                5,
                "疏散指引：引导人员沿疏散通道撤离，禁止乘坐电梯，在集合点清点人数。",
                "Guide people along the evacuation routes, keep them out of the elevators, "
                "count them at the assembly point.",
            ),
            _step(
                "assist_fire_brigade",
                "supervisor",
                10,
                "配合消防：为消防队引路，提供现场信息（平面图、消防设施位置、被困人员）。",
                "Work with the fire brigade: guide them in and hand over the site "
                "information (floor plans, fire equipment, anyone missing).",
            ),
        ),
    ),
    Playbook(
        kind="theft",
        title=Text("盗窃", "Theft"),
        notice=Text(
            "【安全提示】{where}于{since}发生盗窃事件，物业已报警。请妥善保管财物，"
            "如有线索请联系物业。",
            "[Security notice] A theft was reported at {where} at {since}; the police have "
            "been called. Please keep your valuables safe and tell the management office "
            "anything you saw.",
        ),
        steps=(
            _step(
                "call_police",
                "guard",
                5,
                "报警：拨打110。",
                "Call the police (110).",
            ),
            _step(
                "protect_scene",
                "guard",
                5,
                "保护现场：在确保安全的前提下控制嫌疑人，保存监控录像。",
                "Protect the scene; hold suspects only where it is safe; keep the CCTV recordings.",
            ),
            _step(
                "seal_area",
                "guard",
                10,
                "封锁区域，等待警方到达。",
                "Seal off the area and wait for the police.",
            ),
            _step(
                "notify_owners",
                "front_desk",
                30,
                "告知业主或租户。",
                "Notify the owners or tenants.",
            ),
        ),
    ),
    Playbook(
        kind="device_offline",
        title=Text("设备离线", "Device offline"),
        notice=Text(
            "【设备离线】{where}的设备自{since}起离线，已安排人员现场检查。",
            "[Device offline] A device at {where} has been offline since {since}; staff "
            "are checking on site.",
        ),
        steps=(
            _step(
                "check_on_site",
                "guard",
                30,
                "现场查看设备（网关）：是否断电、断网、进水或被破坏。",
                "Check the device (gateway) on site: power, network, water, damage.",
            ),
            _step(
                "restore_connection",
                "technician",
                60,
                "恢复设备供电和网络，必要时更换设备；恢复前加强该区域人工巡查。",
                "Restore the device's power and network, replace it if needed; until then, "
                "cover its area by patrol.",
                ticket="low_voltage",
            ),
        ),
    ),
)

PLAYBOOKS: Final[Mapping[IncidentKind, Playbook]] = MappingProxyType(
    {p.kind: p for p in _PLAYBOOK_LIST}
)


def playbook(kind: str) -> Playbook:
    """The playbook of an incident kind or alias (`smoke` -> fire); ValueError if unknown."""
    canonical = KIND_ALIASES.get(kind, kind)
    for candidate in INCIDENT_KINDS:
        if candidate == canonical:
            return PLAYBOOKS[candidate]
    raise ValueError(f"unknown incident kind {kind!r}")


def incident_title(kind: str, locale: Locale) -> str:
    """The title of an incident kind in `locale`."""
    return playbook(kind).title.in_locale(locale)


_TO_BE_CONFIRMED: Final = Text("待定", "to be confirmed")


def render_notice(
    kind: str,
    locale: Locale,
    *,
    site: str,
    location: str | None,
    since: datetime,
    eta: datetime | None = None,
) -> str:
    """The notice of an incident kind in `locale`.

    Times are printed as given: convert them to the site's timezone first.
    """
    if locale == "zh-CN":
        where = site + (location or "")
    else:
        where = f"{site}, {location}" if location else site
    return (
        playbook(kind)
        .notice.in_locale(locale)
        .format(
            where=where,
            since=f"{since:%Y-%m-%d %H:%M}",
            eta=(
                f"{eta:%Y-%m-%d %H:%M}" if eta is not None else _TO_BE_CONFIRMED.in_locale(locale)
            ),
        )
    )


_ESCALATION: Final[Mapping[str, tuple[Role, ...]]] = MappingProxyType(
    {
        "technician": ("technician", "supervisor", "manager"),
        "guard": ("guard", "supervisor", "manager"),
        "front_desk": ("front_desk", "supervisor", "manager"),
        "supervisor": ("supervisor", "manager"),
        "manager": ("manager",),
    }
)


def escalation_chain(step_role: str) -> tuple[Role, ...]:
    """Who is asked, in order, when a step goes unacknowledged.

    The on-duty technician, guard or front desk first, then the supervisor, then the
    manager; a supervisor's step escalates to the manager.
    """
    chain = _ESCALATION.get(step_role)
    if chain is None:
        raise ValueError(f"unknown step role {step_role!r}")
    return chain


_ALARM_KINDS: Final[Mapping[str, IncidentKind]] = MappingProxyType(
    {
        **dict.fromkeys(
            ("water_leak", "leak", "water", "water_detected", "flood", "flooding"),
            "water_leak",
        ),
        **dict.fromkeys(("pipe_burst", "burst_pipe", "pipe_break"), "pipe_burst"),
        **dict.fromkeys(("smoke", "smoke_alarm", "fire", "fire_alarm", "flame"), "fire"),
        **dict.fromkeys(
            (
                "power_loss",
                "power",
                "power_outage",
                "power_failure",
                "mains_loss",
                "mains_failure",
                "blackout",
            ),
            "power_outage",
        ),
        **dict.fromkeys(
            (
                "intrusion",
                "door_forced",
                "forced_entry",
                "break_in",
                "glass_break",
                "burglary",
                "theft",
            ),
            "theft",
        ),
        **dict.fromkeys(("device_offline", "gateway_offline", "offline"), "device_offline"),
    }
)


def alarm_incident_kind(alarm_type: str) -> IncidentKind | None:
    """The incident kind a sensor alarm type leads to, or None (temperature, low battery...).

    Offline alarms map to `device_offline`; whether a given device's silence warrants an
    incident (a gateway does, one sensor behind it may not) is the caller's decision.
    """
    return _ALARM_KINDS.get(alarm_type.strip().lower().replace("-", "_").replace(" ", "_"))


_LANGUAGE_RANGE: Final = re.compile(r"\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
_QVALUE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
_MAX_HEADER: Final = 4096


def _supported(tag: str) -> Locale | None:
    """The supported locale for a language tag: any Chinese is zh-CN, any English en."""
    primary = tag.split("-", 1)[0].lower()
    if primary == "zh":
        return "zh-CN"
    if primary == "en":
        return "en"
    return None


def negotiate_locale(accept_language: str | None, default: str) -> Locale:
    """Pick zh-CN or en from an `Accept-Language` header (q-values honoured, RFC 9110).

    `default` (the site's locale) answers a missing, unusable or `*` header; a default
    that is neither Chinese nor English means zh-CN.
    """
    fallback = _supported(default) or "zh-CN"
    if not accept_language:
        return fallback
    ranked: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept_language[:_MAX_HEADER].split(",")):
        tag, *params = (part.strip() for part in item.split(";"))
        if not _LANGUAGE_RANGE.fullmatch(tag):
            continue
        q: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
        if q is not None:
            ranked.append((q, index, tag))
    # `*` stands for the languages not named elsewhere in the header.
    named = {loc for _, _, tag in ranked if (loc := _supported(tag)) is not None}
    for q, _, tag in sorted(ranked, key=lambda r: (-r[0], r[1])):
        if q <= 0:
            break
        if tag == "*":
            for candidate in (fallback, *LOCALES):
                if candidate not in named:
                    return candidate
            continue
        locale = _supported(tag)
        if locale is not None:
            return locale
    return fallback
