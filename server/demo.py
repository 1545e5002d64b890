"""Demo data for `estateops up --demo`: a residential and a commercial site with staff,
checkpoints and a patrol route, and devices (a gateway, water-leak sensors, a power sensor)
to publish test events for."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg

from server.auth import hash_password
from server.devices.kinds import DeviceKind, default_inactivity_timeout

SITES = [
    ("demo-garden", "翠湖花园 Emerald Lake Garden", "residential", "Asia/Shanghai", "zh-CN"),
    ("demo-plaza", "环球商业广场 Global Plaza", "commercial", "Asia/Shanghai", "en"),
]
ZONES = [
    ("南门 South gate", "entrance"),
    ("地下车库 Car park B1", "parking"),
    ("1号楼大堂 Block 1 lobby", "lobby"),
    ("1号楼电梯厅 Block 1 elevator hall", "elevator_hall"),
    ("垃圾房 Garbage room", "garbage_room"),
    ("水泵房 Pump room", "plant_room"),
]
# (id, kind, gateway, zone name, device name); every site gets each. The leak sensors talk
# through the gateway; the power-loss sensor talks to the broker itself.
DEVICES: list[tuple[str, DeviceKind, str | None, str, str]] = [
    ("gw-1", "gateway", None, "1号楼大堂 Block 1 lobby", "1号楼网关 Block 1 gateway"),
    ("leak-1", "water_leak", "gw-1", "水泵房 Pump room", "水泵房漏水 Pump room leak"),
    ("leak-2", "water_leak", "gw-1", "地下车库 Car park B1", "车库漏水 Car park leak"),
    ("power-1", "power", None, "水泵房 Pump room", "水泵房电源 Pump room mains"),
]
# (username suffix, role, full name); every site gets one of each.
STAFF = [
    ("manager", "manager", "王经理 Wang"),
    ("supervisor", "supervisor", "李主管 Li"),
    ("guard", "guard", "张保安 Zhang"),
    ("tech", "technician", "刘师傅 Liu"),
    ("cleaner", "cleaner", "陈阿姨 Chen"),
    ("desk", "front_desk", "赵前台 Zhao"),
]


async def seed_demo(url: str) -> list[str]:
    """Create (or refresh) the demo data; returns lines to print, logins included."""
    password = secrets.token_urlsafe(9)
    pw_hash = await asyncio.to_thread(hash_password, password)
    conn = await asyncpg.connect(url)
    lines = ["demo data:"]
    try:
        async with conn.transaction():
            for code, name, kind, tz, locale in SITES:
                site_id: int = await conn.fetchval(
                    "INSERT INTO sites (code, name, kind, timezone, locale) VALUES ($1,$2,$3,$4,$5)"
                    " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name RETURNING id",
                    code,
                    name,
                    kind,
                    tz,
                    locale,
                )
                await conn.executemany(
                    "INSERT INTO zones (site_id, name, kind) VALUES ($1, $2, $3)"
                    " ON CONFLICT (site_id, name) DO NOTHING",
                    [(site_id, z, k) for z, k in ZONES],
                )
                await conn.executemany(
                    "INSERT INTO units (site_id, building, floor, number) VALUES ($1, '1', $2, $3)"
                    " ON CONFLICT DO NOTHING",
                    [(site_id, floor, f"{floor}0{door}") for floor in (1, 2, 3) for door in (1, 2)],
                )
                prefix = code.removeprefix("demo-")
                users = [(f"{prefix}-{s}", role, full) for s, role, full in STAFF]
                unit_id = await conn.fetchval(
                    "SELECT id FROM units WHERE site_id = $1 ORDER BY id LIMIT 1", site_id
                )
                users.append((f"{prefix}-resident", "resident", "业主 Resident"))
                for username, role, full in users:
                    user_id = await conn.fetchval(
                        "INSERT INTO users (username, password_hash, full_name, role, unit_id)"
                        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username)"
                        " DO UPDATE SET password_hash = EXCLUDED.password_hash RETURNING id",
                        username,
                        pw_hash,
                        full,
                        role,
                        unit_id if role == "resident" else None,
                    )
                    await conn.execute(
                        "INSERT INTO site_members (user_id, site_id) VALUES ($1, $2)"
                        " ON CONFLICT DO NOTHING",
                        user_id,
                        site_id,
                    )
                lines.append(
                    f"  site {code} (id {site_id}, {kind}): users "
                    + ", ".join(u for u, _, _ in users)
                )
                await _seed_patrol(conn, site_id, kind)
                lines.append(
                    "    checkpoints and a patrol route; printable QR labels: "
                    f"GET /api/sites/{site_id}/checkpoints/qr-sheet.pdf"
                )
                await _seed_devices(conn, site_id)
                lines.append("    devices: " + ", ".join(f"{d} ({k})" for d, k, _, _, _ in DEVICES))
    finally:
        await conn.close()
    lines.append(f"  every demo user's password (new on each start): {password}")
    lines += leak_instructions(SITES[0][0])
    return lines


def leak_instructions(site_code: str) -> list[str]:
    """How to make a test leak with mosquitto_pub or paho: an alarm, then an incident."""
    topic = f"estateops/v1/{site_code}/gw-1/leak-1/evt"
    payload = (
        '{"v":1,"event_id":"\'$(cat /proc/sys/kernel/random/uuid)\'","device_id":"leak-1",'
        '"boot":1,"seq":\'$(date +%s)\',"ts":"\'$(date -u +%Y-%m-%dT%H:%M:%SZ)\'",'
        '"type":"water_leak","state":"active"}'
    )
    return [
        "  test a leak (the broker is at MQTT_URL, printed below; 127.0.0.1:1883 by default):",
        f"    mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t {topic} -m '{payload}'",
        "    or with paho (pip install paho-mqtt):",
        '    python -c "import json,time,uuid,datetime as d; import paho.mqtt.publish as p; '
        f"p.single('{topic}', json.dumps(dict(v=1, event_id=str(uuid.uuid4()), "
        "device_id='leak-1', boot=1, seq=int(time.time()), "
        "ts=d.datetime.now(d.timezone.utc).isoformat(), type='water_leak', state='active')), "
        "qos=1, hostname='127.0.0.1', port=1883)\"",
        '    then GET /api/incidents?site_id=<id>; send "state":"clear" to clear the alarm',
    ]


async def _seed_devices(conn: asyncpg.Connection[asyncpg.Record], site_id: int) -> None:
    for device_id, kind, gateway, zone, name in DEVICES:
        await conn.execute(
            "INSERT INTO devices (site_id, id, kind, zone_id, gateway_id, name, "
            "inactivity_timeout_s) SELECT $1, $2, $3, z.id, $4, $5, $6 FROM zones z "
            "WHERE z.site_id = $1 AND z.name = $7 ON CONFLICT (site_id, id) DO NOTHING",
            site_id,
            device_id,
            kind,
            gateway,
            name,
            default_inactivity_timeout(kind),
            zone,
        )


async def _seed_patrol(conn: asyncpg.Connection[asyncpg.Record], site_id: int, kind: str) -> None:
    """One checkpoint per zone, near each other, and a route through all of them."""
    zones = await conn.fetch("SELECT id, name FROM zones WHERE site_id = $1 ORDER BY id", site_id)
    for i, zone in enumerate(zones):
        await conn.execute(
            "INSERT INTO checkpoints (site_id, zone_id, name, lat, lon, radius_m)"
            " VALUES ($1, $2, $3, $4, $5, 40) ON CONFLICT (site_id, name) DO NOTHING",
            site_id,
            zone["id"],
            zone["name"],
            31.2304 + 0.0003 * i,
            121.4737 + 0.0002 * i,
        )
    if await conn.fetchval("SELECT 1 FROM patrol_routes WHERE site_id = $1", site_id):
        return
    interval = 120 if kind == "residential" else 60  # the service standard
    route_id = await conn.fetchval(
        "INSERT INTO patrol_routes (site_id, name, interval_minutes, duration_minutes)"
        " VALUES ($1, $2, $3, $3) RETURNING id",
        site_id,
        "全区巡逻 Full patrol",
        interval,
    )
    await conn.execute(
        "INSERT INTO patrol_route_checkpoints (route_id, position, checkpoint_id)"
        " SELECT $1, row_number() OVER (ORDER BY id) - 1, id FROM checkpoints"
        " WHERE site_id = $2",
        route_id,
        site_id,
    )
