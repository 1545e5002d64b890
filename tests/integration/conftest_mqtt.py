"""Real MQTT brokers and bridges for the bridge tests (loaded with `pytest_plugins`).

- `amqtt_url`: the embedded broker (server.embedded.run_broker) in this event loop;
- `mosquitto_url`: /usr/sbin/mosquitto as a child process with a generated config
  (persistence in a temporary folder, a queue large enough for the tests);
- `running_bridge`: a Bridge in this event loop; `BridgeProcess`: one in a child process
  (`python -m mqtt_bridge.run`), to be killed with SIGKILL or stopped with SIGTERM;
- `Device`: a paho client that publishes like a sensor or gateway (with a Last Will).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqtt_bridge.ingest import Bridge
from server.config import MqttSettings, Settings
from server.embedded import free_port, run_broker

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
PREFIX = "estateops/v1"


def topic(site: str, device: str, kind: str = "evt", gateway: str | None = None) -> str:
    return f"{PREFIX}/{site}/{gateway or device}/{device}/{kind}"


def event(
    device: str,
    *,
    type: str = "water_leak",
    state: str = "active",
    boot: int = 1,
    seq: int = 1,
    event_id: str | None = None,
    ts: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body = {
        "v": 1,
        "event_id": event_id or str(uuid.uuid4()),
        "device_id": device,
        "boot": boot,
        "seq": seq,
        "ts": (ts or datetime.now(UTC)).isoformat(),
        "type": type,
        "state": state,
    }
    body.update(extra)
    return body


async def wait_for(
    check: Callable[[], Awaitable[Any]], within: float = 15.0, what: str = "condition"
) -> Any:
    """Poll until `check()` returns something truthy; fail with its last value."""
    deadline = time.monotonic() + within
    value = None
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}; last value: {value!r}")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
async def amqtt_url() -> AsyncIterator[str]:
    """The embedded broker (MQTT 3.1.1). No `protocol` in the URL: the bridge finds out."""
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    logging.getLogger("transitions").setLevel(logging.ERROR)
    port = free_port()
    stop = asyncio.Event()
    task = asyncio.create_task(run_broker(port, stop))
    for _ in range(100):
        if task.done():
            task.result()
        if _accepts(port):
            break
        await asyncio.sleep(0.05)
    try:
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 10)


class Mosquitto:
    """A mosquitto child process on a free port, its data in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        data = folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            # Started as root, mosquitto would switch to its own user, which cannot write in
            # pytest's private temporary folders: stay the user running the tests.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {data}/\n"
            "max_queued_messages 100000\n"
            "max_queued_bytes 0\n"
            "max_inflight_messages 1000\n"
            "log_dest stderr\nlog_type error\nlog_type warning\n"
        )

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)])
        deadline = time.monotonic() + 10
        while not _accepts(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start (exit {self.process.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # saves its persistence file on the way out
            self.process.wait(10)
        self.process = None


@pytest.fixture
def mosquitto(tmp_path: Path) -> Any:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed (`.ci/run` installs it: apt-get install mosquitto)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto_url(mosquitto: Mosquitto) -> str:
    return mosquitto.url


def bridge_settings(
    settings: Settings, url: str, client_id: str | None = None, shared_group: str | None = None
) -> Settings:
    return replace(
        settings,
        mqtt=MqttSettings(
            url=url,
            client_id=client_id or f"test-bridge-{uuid.uuid4().hex[:8]}",
            shared_group=shared_group,
        ),
    )


@contextlib.asynccontextmanager
async def running_bridge(settings: Settings, url: str, **kwargs: Any) -> AsyncIterator[Bridge]:
    """A bridge in this event loop, connected and subscribed before the body runs."""
    bridge = Bridge(bridge_settings(settings, url, **kwargs))
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))

    async def subscribed() -> bool:
        if task.done():
            task.result()
        link = bridge.link
        return link is not None and link.connected and link.subscribed

    await wait_for(subscribed, 15, "the bridge to subscribe")
    try:
        yield bridge
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


class Device:
    """A paho client publishing as a device or gateway (MQTT 3.1.1, like most firmware)."""

    def __init__(self, url: str, client_id: str | None = None) -> None:
        self.port = int(url.rsplit(":", 1)[1].split("?")[0])
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"dev-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        self.client.max_inflight_messages_set(200)

    def will(self, topic: str, payload: dict[str, Any] | str) -> Device:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        self.client.will_set(topic, body, qos=1, retain=True)
        return self

    async def connect(self) -> Device:
        self.client.connect("127.0.0.1", self.port, keepalive=30)
        self.client.loop_start()
        await wait_for(self._is_connected, 10, "the device to connect")
        return self

    async def _is_connected(self) -> bool:
        return self.client.is_connected()

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1, retain: bool = False
    ) -> None:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            await wait_for(self._published(info), 10, "the broker to take the message")

    async def publish_many(self, messages: list[tuple[str, bytes]], qos: int = 1) -> None:
        infos = []
        for t, p in messages:
            infos.append(self.client.publish(t, p, qos=qos))
            if len(infos) >= 500:
                for info in infos:
                    await wait_for(self._published(info), 30, "the broker to take the messages")
                infos = []
        for info in infos:
            await wait_for(self._published(info), 30, "the broker to take the messages")

    @staticmethod
    def _published(info: mqtt.MQTTMessageInfo) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return info.is_published()

        return check

    def crash(self) -> None:
        """Drop the connection without DISCONNECT: the broker publishes the Last Will."""
        sock = self.client.socket()
        self.client.loop_stop()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
async def devices() -> AsyncIterator[Callable[[str], Awaitable[Device]]]:
    """Connect device clients to a broker URL; all are closed after the test."""
    made: list[Device] = []

    async def connect(url: str, client_id: str | None = None, **will: Any) -> Device:
        device = Device(url, client_id)
        if will:
            device.will(will["topic"], will["payload"])
        made.append(device)
        return await device.connect()

    yield connect
    for device in made:
        device.close()


class BridgeProcess:
    """`python -m mqtt_bridge.run` as a child process."""

    def __init__(self, db_url: str, mqtt_url: str, client_id: str, shared_group: str | None = None):
        self.env = dict(
            os.environ,
            DATABASE_URL=db_url,
            MQTT_URL=mqtt_url,
            MQTT_CLIENT_ID=client_id,
            ESTATEOPS_ENV="development",
            ESTATEOPS_LOG_LEVEL="INFO",
            PYTHONPATH=str(ROOT),
        )
        if shared_group:
            self.env["MQTT_SHARED_GROUP"] = shared_group
        else:
            self.env.pop("MQTT_SHARED_GROUP", None)
        self.process: subprocess.Popen[bytes] | None = None
        self.logs: list[str] = []

    def start(self) -> BridgeProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mqtt_bridge.run"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self

    async def wait_subscribed(self, within: float = 20.0) -> None:
        """The bridge logs `connected ...`; give its SUBSCRIBE a moment to be acknowledged."""
        assert self.process is not None
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        buffer = b""

        async def connected() -> bool:
            nonlocal buffer
            assert self.process is not None
            assert self.process.stderr is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the bridge exited with {self.process.returncode}")
            chunk = self.process.stderr.read()
            if chunk:
                buffer += chunk
            return b'"subscribed' in buffer

        await wait_for(connected, within, "the bridge process to subscribe")
        self.logs += buffer.decode(errors="replace").splitlines()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self._collect()

    def stop(self) -> dict[str, int]:
        """SIGTERM; returns the counters of its last `bridge stopped` line."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._collect()
        assert code == 0, "\n".join(self.logs[-20:])
        for line in reversed(self.logs):
            if "bridge stopped" in line:
                stats: dict[str, int] = json.loads(line)["ingest"]
                return stats
        raise AssertionError("no `bridge stopped` line:\n" + "\n".join(self.logs[-20:]))

    def _collect(self) -> None:
        assert self.process is not None
        assert self.process.stderr is not None
        with contextlib.suppress(Exception):
            rest = self.process.stderr.read()
            if rest:
                self.logs += rest.decode(errors="replace").splitlines()
