"""Device kinds and their default inactivity timeouts. Pure, no I/O.

Mains-powered devices (gateways, power-loss detectors) report often, so silence of a
few minutes means trouble; battery sensors sleep and report hourly, so they get hours.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

DeviceKind: TypeAlias = Literal[
    "gateway", "water_leak", "power", "smoke", "temperature", "humidity", "door", "motion", "other"
]
DEVICE_KINDS: Final[tuple[DeviceKind, ...]] = (
    "gateway",
    "water_leak",
    "power",
    "smoke",
    "temperature",
    "humidity",
    "door",
    "motion",
    "other",
)
MAINS_POWERED: Final[frozenset[DeviceKind]] = frozenset({"gateway", "power"})

MIN_TIMEOUT_S: Final = 60
MAX_TIMEOUT_S: Final = 7 * 24 * 3600

_DEFAULT_TIMEOUT_S: Final[dict[DeviceKind, int]] = {
    "gateway": 5 * 60,
    "power": 10 * 60,
    # Life-safety battery sensors heartbeat more often than comfort sensors.
    "water_leak": 4 * 3600,
    "smoke": 4 * 3600,
    "temperature": 3 * 3600,
    "humidity": 3 * 3600,
    "door": 6 * 3600,
    "motion": 6 * 3600,
    "other": 6 * 3600,
}


def default_inactivity_timeout(kind: DeviceKind) -> int:
    """Seconds of silence after which a device of this kind counts as offline."""
    return _DEFAULT_TIMEOUT_S[kind]
