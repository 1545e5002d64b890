"""`estateops bridge`: run the MQTT bridge until SIGINT or SIGTERM.

Settings come from the environment (server.config): DATABASE_URL, MQTT_URL,
MQTT_CLIENT_ID (fixed per bridge: it names the broker session that holds what arrives
while the bridge is away; give each bridge its own), MQTT_SHARED_GROUP (several
bridges split evt/tele through $share/<group>/...). Options override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import replace

from mqtt_bridge.client import BrokerConfigError, BrokerOptions
from mqtt_bridge.ingest import DEFAULT_BATCH_MAX, Bridge, BridgeError
from server.config import ConfigError, Settings, load_settings
from server.observability import configure_logging

log = logging.getLogger("estateops.bridge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="estateops bridge", description="MQTT to PostgreSQL: events, statuses, alarms"
    )
    parser.add_argument("--url", help="broker URL (default: $MQTT_URL), e.g. mqtt://host:1883")
    parser.add_argument("--client-id", help="MQTT client id (default: $MQTT_CLIENT_ID)")
    parser.add_argument("--shared-group", help="shared subscription group ($MQTT_SHARED_GROUP)")
    parser.add_argument(
        "--batch",
        type=int,
        default=DEFAULT_BATCH_MAX,
        help=f"most messages per transaction (default {DEFAULT_BATCH_MAX})",
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    mqtt = settings.mqtt
    mqtt = replace(
        mqtt,
        url=args.url or mqtt.url,
        client_id=args.client_id or mqtt.client_id,
        shared_group=args.shared_group or mqtt.shared_group,
    )
    if not settings.database.url:
        raise ConfigError("DATABASE_URL is not set")
    if not mqtt.url:
        raise ConfigError("MQTT_URL is not set (e.g. mqtt://127.0.0.1:1883)")
    BrokerOptions.from_url(mqtt.url)  # refuse a bad URL before anything starts
    return replace(settings, mqtt=mqtt)


async def _serve(settings: Settings, batch: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await Bridge(settings, batch_max=batch).run(stop)
    except BridgeError as exc:
        log.error("bridge stopped: %s", exc)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the bridge; 0 after a clean stop, 1 on a fatal error, 2 on bad settings."""
    args = build_parser().parse_args(argv)
    if args.batch < 1:
        print("error: --batch must be at least 1", file=sys.stderr)
        return 2
    try:
        settings = _settings(args)
    except (ConfigError, BrokerConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    return asyncio.run(_serve(settings, args.batch))


if __name__ == "__main__":
    raise SystemExit(main())
