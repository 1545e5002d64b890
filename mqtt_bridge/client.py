"""The MQTT side of the bridge: one paho client, its persistent session, and manual acks.

paho's network loop runs in its own thread (`loop_start`). `on_message` does nothing but
append the message to a deque and, at most once per hand-off, wake the asyncio loop that
stores messages in PostgreSQL and then acks them here, in arrival order.

A message is acked only on the connection that delivered it: packet ids are reused by
the broker on a new connection, so an ack that arrives after a reconnect could
acknowledge a different, not yet stored message. Each connection is an `epoch`; acks of
an older epoch are dropped, and the broker redelivers those messages (the inbox makes
the second copy a no-op).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqtt_bridge.topics import DEFAULT_PREFIX, subscriptions

log = logging.getLogger("estateops.bridge")

Protocol = Literal["auto", "5", "3.1.1"]

DEFAULT_SESSION_EXPIRY_S: Final = 7 * 24 * 3600
DEFAULT_RECEIVE_MAXIMUM: Final = 2000
_UNSUPPORTED_PROTOCOL: Final = 132  # CONNACK reason code; paho maps a 3.1.1 refusal to it


class BrokerConfigError(ValueError):
    """MQTT_URL (or its options) cannot be used."""


@dataclass(frozen=True)
class BrokerOptions:
    """Where and how to connect, from a URL such as
    ``mqtt://user:pass@broker:1883?protocol=5&session_expiry=604800``.

    Options: ``protocol`` (``auto``: MQTT 5, falling back to 3.1.1 when the broker
    refuses it, as the embedded amqtt does; or ``5``, ``3.1.1``), ``session_expiry``
    (seconds the broker keeps the session and its queue while the bridge is away; MQTT 5),
    ``receive_maximum`` (unacked messages in flight), ``keepalive`` (seconds), ``prefix``
    (the topic prefix). ``mqtts://`` connects with TLS (system CAs).
    """

    host: str
    port: int = 1883
    tls: bool = False
    username: str | None = None
    password: str | None = None
    protocol: Protocol = "auto"
    session_expiry_s: int = DEFAULT_SESSION_EXPIRY_S
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    keepalive_s: int = 30
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_url(cls, url: str) -> BrokerOptions:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl") or not parts.hostname:
            raise BrokerConfigError(
                f"MQTT URL {url!r} must look like mqtt://host:1883 or mqtts://host:8883"
            )
        tls = parts.scheme in ("mqtts", "ssl")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {
            "protocol",
            "session_expiry",
            "receive_maximum",
            "keepalive",
            "prefix",
        }
        if unknown:
            raise BrokerConfigError(f"unknown MQTT URL option(s): {', '.join(sorted(unknown))}")
        protocol = query.get("protocol", "auto")
        if protocol not in ("auto", "5", "3.1.1"):
            raise BrokerConfigError("protocol must be auto, 5 or 3.1.1")
        try:
            return cls(
                host=parts.hostname,
                port=parts.port or (8883 if tls else 1883),
                tls=tls,
                username=unquote(parts.username) if parts.username else None,
                password=unquote(parts.password) if parts.password else None,
                protocol=protocol,  # type: ignore[arg-type]  # checked above
                session_expiry_s=_bounded(query, "session_expiry", 0, 2**32 - 1),
                receive_maximum=_bounded(query, "receive_maximum", 1, 65535),
                keepalive_s=_bounded(query, "keepalive", 5, 65535),
                prefix=query.get("prefix", DEFAULT_PREFIX),
            )
        except ValueError as exc:  # a port out of range
            raise BrokerConfigError(f"MQTT URL {url!r}: {exc}") from exc


_DEFAULTS: Final = {
    "session_expiry": DEFAULT_SESSION_EXPIRY_S,
    "receive_maximum": DEFAULT_RECEIVE_MAXIMUM,
    "keepalive": 30,
}


def _bounded(query: dict[str, str], name: str, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None:
        return _DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise BrokerConfigError(f"{name} must be a whole number") from None
    if not low <= value <= high:
        raise BrokerConfigError(f"{name} must be between {low} and {high}")
    return value


class Received(msgspec.Struct, frozen=True):
    """A message as paho delivered it, stamped with the connection (`epoch`) it came on."""

    epoch: int
    mid: int
    qos: int
    retained: bool
    topic: str
    payload: bytes
    received_at: float  # time.time()


def probe_protocol(options: BrokerOptions, client_id: str, timeout: float = 5.0) -> bool | None:
    """Does the broker speak MQTT 5? None when it cannot be reached.

    A bare MQTT 5 CONNECT (no properties, a throwaway client id, clean start): a 3.1.1
    broker answers "unsupported protocol version" (amqtt does). One that does not answer
    at all is taken for a 3.1.1 broker too.
    """
    answer: list[bool] = []
    answered = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{client_id}-probe",
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls:
        client.tls_set()

    def on_connect(
        c: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        answer.append(reason_code.value != _UNSUPPORTED_PROTOCOL)
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(options.host, options.port, keepalive=10, clean_start=True)
    except OSError:
        return None
    client.loop_start()
    try:
        answered.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0] if answer else False


class BrokerLink:
    """A paho client with a persistent session, subscribed for the bridge.

    Thread-safe hand-off: `take()` and `ack()` are called from the asyncio thread;
    paho's callbacks run in its network thread.
    """

    def __init__(
        self,
        options: BrokerOptions,
        client_id: str,
        shared_group: str | None,
        wake: Callable[[], None],
        high_water: int = 10_000,
    ) -> None:
        self.options = options
        self.client_id = client_id
        self.topics = subscriptions(options.prefix, shared_group)
        self._wake = wake
        self._inbox: deque[Received] = deque()
        self._signalled = False
        # Past this many messages waiting, paho's thread pauses (TCP pushes back on the
        # broker): memory stays bounded even if the broker ignores our receive maximum.
        self._high_water = high_water
        self._drained = threading.Event()
        self._lock = threading.Lock()  # guards _epoch/_connected against ack()
        self._epoch = 0
        self._connected = False
        self.fatal: str | None = None
        self.subscribed = False
        self.connections = 0
        if options.protocol == "auto":
            raise ValueError("decide the protocol first (probe_protocol)")
        self._v5 = options.protocol == "5"
        self._client = self._make_client()

    # -- lifecycle

    @property
    def protocol_name(self) -> str:
        return "MQTT 5" if self._v5 else "MQTT 3.1.1"

    @property
    def connected(self) -> bool:
        return self._connected

    def _make_client(self) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if self._v5 else MQTTProtocolVersion.MQTTv311,
            # A persistent session: MQTT 3.1.1 says so here, MQTT 5 with clean_start below.
            clean_session=None if self._v5 else False,
            manual_ack=True,
            reconnect_on_failure=True,
        )
        if self.options.username is not None:
            client.username_pw_set(self.options.username, self.options.password)
        if self.options.tls:
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_connect_fail = self._on_connect_fail
        return client

    def start(self) -> None:
        """Connect in the background (paho retries with backoff until the broker answers)."""
        properties = None
        kwargs: dict[str, Any] = {}
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.options.session_expiry_s
            properties.ReceiveMaximum = self.options.receive_maximum
            kwargs["clean_start"] = False
        self._client.connect_async(
            self.options.host,
            self.options.port,
            keepalive=self.options.keepalive_s,
            properties=properties,
            **kwargs,
        )
        self._client.loop_start()

    def stop(self) -> None:
        """Disconnect cleanly; the session (and what was not acked) stays with the broker."""
        with self._lock:
            self._connected = False
            self._epoch += 1
        self._client.disconnect()
        self._client.loop_stop()

    # -- the asyncio side

    def pending(self) -> int:
        return len(self._inbox)

    def rearm(self) -> None:
        """Called by the consumer before take(): the next message wakes it again."""
        self._signalled = False

    def take(self, limit: int) -> list[Received]:
        inbox, out = self._inbox, list[Received]()
        while inbox and len(out) < limit:
            out.append(inbox.popleft())
        if len(inbox) < self._high_water:
            self._drained.set()
        return out

    def ack(self, messages: Sequence[Received]) -> int:
        """PUBACK these messages, in order, if they came on the current connection."""
        sent = 0
        with self._lock:
            if not self._connected:
                return 0
            epoch, client = self._epoch, self._client
            for m in messages:
                if m.qos and m.epoch == epoch:
                    client.ack(m.mid, m.qos)
                    sent += 1
        return sent

    # -- paho callbacks (its network thread)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.warning("the broker refused the connection: %s", reason_code)
            return
        with self._lock:
            self._epoch += 1
            self._connected = True
        self.connections += 1
        self.subscribed = False
        log.info(
            "connected to %s:%s (%s) as %s, session %s",
            self.options.host,
            self.options.port,
            self.protocol_name,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )
        if self._v5:
            # Retained statuses only for a new subscription, not again on every reconnect.
            options = [
                (t, SubscribeOptions(qos=q, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB))
                for t, q in self.topics
            ]
            client.subscribe(options)
        else:
            client.subscribe(self.topics)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("cannot reach the MQTT broker at %s:%s", self.options.host, self.options.port)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._lock:
            was = self._connected
            self._connected = False
            self._epoch += 1
        if was:
            log.warning("disconnected from the MQTT broker (%s); reconnecting", reason_code)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [
            f"{topic} ({code})"
            for (topic, _), code in zip(self.topics, reason_codes, strict=False)
            if code.is_failure
        ]
        if refused:
            self.fatal = "the broker refused the subscription(s): " + ", ".join(refused)
            self._wake()
            return
        self.subscribed = True
        log.info("subscribed to %s", ", ".join(t for t, _ in self.topics))

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = ""  # brokers refuse such topics; if one slips through it is a bad_topic
        self._inbox.append(
            Received(
                self._epoch, msg.mid, msg.qos, msg.retain, topic, bytes(msg.payload), time.time()
            )
        )
        if not self._signalled:
            self._signalled = True
            self._wake()
        if len(self._inbox) >= self._high_water:
            self._drained.clear()
            # Re-checked every second, so stop() is never stuck behind a full inbox.
            while len(self._inbox) >= self._high_water and self._connected:
                self._drained.wait(1.0)
