"""The shipped Mosquitto configuration, run for real: no anonymous access, and each gateway
publishes only under its own topic subtree; passwords made by `estateops mqtt-credentials`."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from mqtt_bridge.credentials import gateway_username, set_credentials, verify_password
from server.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

pytestmark = [
    pytest.mark.mosquitto,
    pytest.mark.skipif(
        not Path(MOSQUITTO).exists(),
        reason="mosquitto is not installed (apt-get install mosquitto)",
    ),
]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Mosquitto with mqtt_bridge/broker/mosquitto.conf and acl, paths moved to tmp_path."""
    port = free_port()
    passwords = tmp_path / "passwords"
    logins = {
        "bridge": set_credentials(passwords, "estateops-bridge"),
        "gw1": set_credentials(passwords, gateway_username("garden", "gw1")),
        "gw2": set_credentials(passwords, gateway_username("garden", "gw2")),
    }
    (tmp_path / "data").mkdir()
    conf = (ROOT / "mqtt_bridge/broker/mosquitto.conf").read_text()
    conf = (
        conf.replace("/mosquitto/config/passwords", str(passwords))
        .replace("/mosquitto/config/acl", str(ROOT / "mqtt_bridge/broker/acl"))
        .replace("/mosquitto/data/", f"{tmp_path / 'data'}/")
        .replace("listener 1883", f"listener {port} 127.0.0.1")
    )
    (tmp_path / "mosquitto.conf").write_text(conf)
    # As root, mosquitto drops to its own user before it reads the password file.
    subprocess.run(["chmod", "-R", "a+rwX", str(tmp_path)], check=True)
    for parent in tmp_path.parents:
        if parent != Path("/"):
            parent.chmod(parent.stat().st_mode | 0o011)
    if os.geteuid() == 0 and _user_exists("mosquitto"):
        shutil.chown(passwords, "mosquitto")
    proc = subprocess.Popen(
        [MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = mqtt.Client(CallbackAPIVersion.VERSION2)
            try:
                probe.connect("127.0.0.1", port)
                probe.disconnect()
                break
            except OSError:
                time.sleep(0.1)
        yield port, logins
    finally:
        proc.terminate()
        proc.wait(10)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _client(port: int, username: str | None, password: str | None) -> tuple[mqtt.Client, int]:
    result: list[int] = []
    done = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def on_connect(
        client: mqtt.Client, userdata: object, flags: object, rc: object, props: object
    ) -> None:
        result.append(int(rc.value) if hasattr(rc, "value") else int(rc))  # type: ignore[call-overload]
        done.set()

    c.on_connect = on_connect
    if username is not None:
        c.username_pw_set(username, password)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10)
    return c, result[0]


def test_mosquitto_accepts_the_password_format() -> None:
    # The hash is Mosquitto's own ($7$, PBKDF2-SHA512): a line made by mosquitto_passwd.
    made_by_mosquitto = (
        "$7$101$bxW2YrEK+7pgKzww$BocjnR4rS44w867Ko90jSPZgpJbuB7remMU/3lfto3BZDFdgme"
        "DRXZIboEGdh1VBe72jQb/ZfaAC3n9qziI09w=="
    )
    assert verify_password("secret123", made_by_mosquitto)
    assert not verify_password("secret124", made_by_mosquitto)
    with pytest.raises(ValueError, match="site_code"):
        gateway_username("bad/site", "gw")


def test_anonymous_and_wrong_passwords_are_refused(broker: tuple[int, dict[str, str]]) -> None:
    port, _ = broker
    for username, password in ((None, None), ("garden/gw1", "wrong"), ("garden/gw9", "x")):
        c, rc = _client(port, username, password)
        c.loop_stop()
        assert rc != 0, username


def test_a_gateway_publishes_only_under_its_own_subtree(broker: tuple[int, dict[str, str]]) -> None:
    port, logins = broker
    got: list[str] = []
    subscribed = threading.Event()
    bridge, rc = _client(port, "estateops-bridge", logins["bridge"])
    assert rc == 0
    bridge.on_message = lambda c, u, m: got.append(m.topic)
    bridge.on_subscribe = lambda *a: subscribed.set()
    bridge.subscribe("estateops/v1/#", qos=1)
    assert subscribed.wait(10)
    gw1, rc = _client(port, "garden/gw1", logins["gw1"])
    assert rc == 0
    own = "estateops/v1/garden/gw1/leak-1/evt"
    for t in (own, "estateops/v1/garden/gw2/leak-9/evt", "estateops/v1/plaza/gw1/leak-1/evt"):
        gw1.publish(t, b"{}", qos=1).wait_for_publish(5)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and own not in got:
        time.sleep(0.05)
    time.sleep(0.5)  # give a wrongly accepted message the chance to arrive
    assert got == [own]
    # A gateway cannot read other gateways' traffic either.
    peeked: list[str] = []
    gw2, rc = _client(port, "garden/gw2", logins["gw2"])
    gw2.on_message = lambda c, u, m: peeked.append(m.topic)
    gw2.subscribe("estateops/v1/#", qos=1)
    time.sleep(0.3)
    gw1.publish(own, b"{}", qos=1).wait_for_publish(5)
    time.sleep(0.5)
    assert peeked == []
    for c in (bridge, gw1, gw2):
        c.loop_stop()
        c.disconnect()
