"""Bridge ingest: drain a backlog of QoS 1 events from Mosquitto into PostgreSQL.

With the bridge stopped, N events wait at QoS 1 in Mosquitto for its persistent
session (and for a second session, the baseline's). First a paho subscriber that does
nothing but ack drains its copy (the baseline: what paho and the broker can do); then
the bridge (`python -m mqtt_bridge.run`, a separate process) drains its copy, storing
every event durably (fsync on, acked after commit). Counted in the database: zero lost,
zero doubled, and every alarm's count equals the events that raised it.

Targets (2-core machine): >= 5,000 events/s stored and >= 0.5x the baseline's rate.
Run: python bench/bridge_ingest.py [--events 100000] [--devices 200] [--batch 1000] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import ROOT, database, machine, rss_mb, today, write_section
from mqtt_bridge.topics import subscriptions
from server.embedded import free_port

SITE = "bench"
BRIDGE_ID = "bench-bridge"
NULL_ID = "bench-null"


def start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    (folder / "data").mkdir(parents=True)
    conf = folder / "mosquitto.conf"
    conf.write_text(
        # As root, mosquitto would switch to its own user: stay the one running the bench.
        f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
        f"listener {port} 127.0.0.1\nallow_anonymous true\n"
        f"persistence true\npersistence_location {folder / 'data'}/\n"
        "max_queued_messages 1000000\nmax_queued_bytes 0\nmax_inflight_messages 2000\n"
        "log_dest stderr\nlog_type error\nlog_type warning\n"
    )
    proc = subprocess.Popen([binary, "-c", str(conf)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
        try:
            c.connect("127.0.0.1", port)
            c.disconnect()
            return proc, port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def session(port: int, client_id: str, manual_ack: bool = True) -> mqtt.Client:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    return c


def connect(c: mqtt.Client, port: int) -> None:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 2000
    c.connect("127.0.0.1", port, clean_start=False, properties=props)


def create_sessions(port: int) -> None:
    """Both sessions subscribe (as the bridge would) and leave: the backlog queues for them."""
    for client_id in (BRIDGE_ID, NULL_ID):
        c = session(port, client_id)
        done = threading.Event()
        c.on_subscribe = lambda *a, done=done: done.set()
        connect(c, port)
        c.loop_start()
        c.subscribe(subscriptions())
        if not done.wait(10):
            raise RuntimeError("subscription not acknowledged")
        c.disconnect()
        c.loop_stop()


def publish(port: int, n: int, devices: int) -> float:
    p = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    p.max_inflight_messages_set(1000)
    p.connect("127.0.0.1", port)
    p.loop_start()
    start = time.perf_counter()
    ts = datetime.now(UTC).isoformat()
    pending = []
    for i in range(n):
        device = f"leak-{i % devices}"
        body = json.dumps(
            {
                "v": 1,
                "event_id": str(uuid.uuid4()),
                "device_id": device,
                "boot": 1,
                "seq": i,
                "ts": ts,
                "type": "water_leak",
                "state": "active",
                "battery": 90,
                "rssi": -60,
                "data": {"probe": "floor"},
            }
        ).encode()
        pending.append(p.publish(f"estateops/v1/{SITE}/{device}/{device}/evt", body, qos=1))
        if len(pending) >= 20000:  # paho's message ids wrap at 65535
            for info in pending:
                info.wait_for_publish()
            pending = []
    for info in pending:
        info.wait_for_publish()
    elapsed = time.perf_counter() - start
    p.disconnect()
    p.loop_stop()
    return elapsed


def null_drain(port: int, n: int) -> float:
    count = 0
    done = threading.Event()
    first: list[float] = []

    def on_message(c: mqtt.Client, _: object, msg: mqtt.MQTTMessage) -> None:
        nonlocal count
        if not first:
            first.append(time.perf_counter())
        c.ack(msg.mid, msg.qos)
        count += 1
        if count >= n:
            done.set()

    c = session(port, NULL_ID)
    c.on_message = on_message
    start = time.perf_counter()
    connect(c, port)
    c.loop_start()
    if not done.wait(600):
        raise RuntimeError(f"the null subscriber received {count} of {n}")
    elapsed = time.perf_counter() - start
    c.disconnect()
    c.loop_stop()
    return elapsed


async def seed(url: str, devices: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        site = await conn.fetchval(
            "INSERT INTO sites (code, name, kind, timezone, locale)"
            " VALUES ($1, 'Bench', 'commercial', 'Asia/Shanghai', 'en') RETURNING id",
            SITE,
        )
        await conn.executemany(
            "INSERT INTO devices (site_id, id, kind, name, inactivity_timeout_s)"
            " VALUES ($1, $2, 'water_leak', $2, 14400)",
            [(site, f"leak-{i}") for i in range(devices)],
        )
    finally:
        await conn.close()


async def verify(url: str, n: int) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT event_id) AS distinct_ids FROM device_events"
        )
        alarms = await conn.fetchrow(
            "SELECT count(*) AS alarms, coalesce(sum(count), 0) AS counted FROM alarms"
        )
        dead = await conn.fetchval("SELECT count(*) FROM dead_letters")
        return {
            "rows": row["rows"],
            "distinct_ids": row["distinct_ids"],
            "alarms": alarms["alarms"],
            "alarm_counts": alarms["counted"],
            "dead_letters": dead,
            "expected": n,
        }
    finally:
        await conn.close()


def bridge_drain(url: str, port: int, n: int, batch: int) -> tuple[float, float, str, float]:
    env = dict(
        os.environ,
        DATABASE_URL=url,
        MQTT_URL=f"mqtt://127.0.0.1:{port}?protocol=5",
        MQTT_CLIENT_ID=BRIDGE_ID,
        ESTATEOPS_LOG_LEVEL="INFO",
        PYTHONPATH=str(ROOT),
    )
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mqtt_bridge.run", "--batch", str(batch)],
        env=env,
        stderr=subprocess.PIPE,
    )
    first = None
    loop = asyncio.new_event_loop()
    conn = loop.run_until_complete(asyncpg.connect(url))
    try:
        while True:
            count = loop.run_until_complete(conn.fetchval("SELECT count(*) FROM device_events"))
            now = time.perf_counter()
            if count and first is None:
                first = now
            if count >= n:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"the bridge exited with {proc.returncode}")
            if now - start > 900:
                raise RuntimeError(f"only {count} of {n} stored")
            time.sleep(0.1)
        elapsed = time.perf_counter() - start
        rss = rss_mb(proc.pid)  # resident memory after the whole backlog went through
    finally:
        loop.run_until_complete(conn.close())
        loop.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    return elapsed, (first or start) - start, err.decode(errors="replace"), rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--write", action="store_true", help="record in docs/PERFORMANCE.md")
    args = parser.parse_args()
    n = args.events
    folder = Path(tempfile.mkdtemp(prefix="estateops-bench-mqtt-"))
    broker, port = start_mosquitto(folder)
    try:
        with database() as url:
            asyncio.run(seed(url, args.devices))
            create_sessions(port)
            published = publish(port, n, args.devices)
            print(f"published {n} events in {published:.1f}s (queued for 2 sessions)")
            null_s = null_drain(port, n)
            null_rate = n / null_s
            print(f"null subscriber: {null_s:.2f}s, {null_rate:,.0f} msg/s")
            bridge_s, startup_s, log, rss = bridge_drain(url, port, n, args.batch)
            print(f"bridge resident memory after {n:,} events: {rss:.0f} MB")
            rate = n / bridge_s
            print(
                f"bridge: {bridge_s:.2f}s (first row after {startup_s:.2f}s), {rate:,.0f} events/s"
            )
            print(f"ratio to the null subscriber: {rate / null_rate:.2f}x")
            check = asyncio.run(verify(url, n))
            print("check:", check)
            stop_line = [line for line in log.splitlines() if "bridge stopped" in line]
            print("bridge:", stop_line[-1] if stop_line else log[-2000:])
            ok = (
                check["rows"] == n
                and check["distinct_ids"] == n
                and check["alarm_counts"] == n
                and check["dead_letters"] == 0
            )
            print("lost/doubled: none" if ok else "LOST OR DOUBLED")
            if args.write:
                write_section(
                    "bridge_ingest",
                    f"## Bridge ingest ({today()})\n\n"
                    f"`python bench/bridge_ingest.py --events {n} --devices {args.devices} "
                    f"--batch {args.batch}` on {machine()}; PostgreSQL embedded, fsync on; "
                    "Mosquitto 2 on the same machine; MQTT 5, QoS 1, acked after commit.\n\n"
                    "| drain of the backlog | seconds | events/s |\n|---|---|---|\n"
                    f"| paho subscriber that only acks (baseline) | {null_s:.2f} "
                    f"| {null_rate:,.0f} |\n"
                    f"| bridge, stored durably (incl. {startup_s:.1f}s start-up) | {bridge_s:.2f} "
                    f"| {rate:,.0f} |\n\n"
                    f"Ratio {rate / null_rate:.2f}x (target >= 0.5x); target >= 5,000/s. "
                    f"Counted in the database: {check['rows']} rows, {check['distinct_ids']} "
                    f"distinct event ids, alarm counts summing to {check['alarm_counts']}, "
                    f"{check['dead_letters']} dead letters: "
                    + ("nothing lost, nothing doubled." if ok else "**LOST OR DOUBLED**.")
                    + f" The bridge's resident memory after {n:,} events: {rss:.0f} MB.\n",
                )
            if not ok:
                raise SystemExit(1)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
