"""MQTT topic scheme: `estateops/v1/{site_code}/{gateway_id}/{device_id}/{kind}`.

The scheme is a contract with device makers (see README). A device without a gateway
uses its own id as `gateway_id`.
"""

from __future__ import annotations

import re
from typing import Final, Literal, TypeAlias

import msgspec

from mqtt_bridge.errors import BadMessage

__all__ = [
    "DEFAULT_PREFIX",
    "KINDS",
    "KIND_QOS",
    "BadMessage",
    "Topic",
    "TopicKind",
    "parse_topic",
    "subscriptions",
]

TopicKind: TypeAlias = Literal["evt", "status", "tele"]

DEFAULT_PREFIX: Final = "estateops/v1"
KINDS: Final[tuple[TopicKind, ...]] = ("evt", "status", "tele")
# QoS per kind as devices publish it: events and status at least once, telemetry best effort.
KIND_QOS: Final[dict[TopicKind, int]] = {"evt": 1, "status": 1, "tele": 0}

_SEGMENT: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_VERSION: Final = re.compile(r"v[0-9]+")
_FIELDS: Final = ("site_code", "gateway_id", "device_id", "kind")
_KIND_BY_NAME: Final[dict[str, TopicKind]] = {k: k for k in KINDS}


class Topic(msgspec.Struct, frozen=True):
    """Where a message came from, as named by its topic."""

    site_code: str
    gateway_id: str
    device_id: str
    kind: TopicKind

    @property
    def via_gateway(self) -> bool:
        """True when the device talks through a separate gateway."""
        return self.gateway_id != self.device_id

    def path(self, prefix: str = DEFAULT_PREFIX) -> str:
        """The topic string this Topic was (or would be) published on."""
        return f"{prefix}/{self.site_code}/{self.gateway_id}/{self.device_id}/{self.kind}"


def _clip(text: str, limit: int = 80) -> str:
    """A repr short enough for a log line or a dead-letter reason."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def parse_topic(topic: str, *, prefix: str = DEFAULT_PREFIX) -> Topic:
    """Parse a topic under `prefix`; raise BadMessage (`bad_topic`, `unsupported_version`)."""
    parts = topic.split("/")
    head = prefix.split("/")
    n = len(head)
    if parts[:n] != head:
        if (
            len(parts) > n
            and parts[: n - 1] == head[:-1]
            and _VERSION.fullmatch(head[-1])
            and _VERSION.fullmatch(parts[n - 1])
        ):
            raise BadMessage(
                "unsupported_version",
                f"topic version {parts[n - 1]!r} is not supported (expected {head[-1]!r})",
            )
        raise BadMessage("bad_topic", f"topic {_clip(topic)} is not under {prefix!r}")
    rest = parts[n:]
    if len(rest) != len(_FIELDS):
        raise BadMessage(
            "bad_topic",
            f"topic {_clip(topic)} does not match "
            f"{prefix}/{{site_code}}/{{gateway_id}}/{{device_id}}/{{kind}}",
        )
    for name, segment in zip(_FIELDS, rest, strict=True):
        if not _SEGMENT.fullmatch(segment):
            raise BadMessage("bad_topic", f"{name} {_clip(segment)} must be 1-64 of [A-Za-z0-9_.-]")
    site_code, gateway_id, device_id, name = rest
    kind = _KIND_BY_NAME.get(name)
    if kind is None:
        raise BadMessage("bad_topic", f"kind {name!r} is not one of evt, status, tele")
    return Topic(site_code, gateway_id, device_id, kind)


def _check_prefix(prefix: str) -> None:
    segments = prefix.split("/")
    if prefix.startswith("$") or any(
        not s or "+" in s or "#" in s or "\x00" in s for s in segments
    ):
        raise ValueError(f"invalid topic prefix: {prefix!r}")


def subscriptions(
    prefix: str = DEFAULT_PREFIX, shared_group: str | None = None
) -> list[tuple[str, int]]:
    """Topic filters and QoS for the bridge.

    With `shared_group`, `evt` and `tele` go through `$share/<group>/...` so several
    bridges split the load; `status` stays a plain subscription in every bridge, because
    brokers do not deliver retained messages to shared subscriptions.
    """
    _check_prefix(prefix)
    share = ""
    if shared_group is not None:
        if not shared_group or any(c in shared_group for c in "/+#\x00"):
            raise ValueError(f"invalid shared subscription group: {shared_group!r}")
        share = f"$share/{shared_group}/"
    return [
        (f"{share}{prefix}/+/+/+/evt", KIND_QOS["evt"]),
        (f"{share}{prefix}/+/+/+/tele", KIND_QOS["tele"]),
        (f"{prefix}/+/+/+/status", KIND_QOS["status"]),
    ]
