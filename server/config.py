"""Settings read from the environment, grouped in small frozen dataclasses.

Secrets (JWT key, QR keys, the key-encryption key, webhook signing) come from
the environment, or from a file named by ``<NAME>_FILE`` (Docker secrets).
Outside development mode a missing or well-known development secret is refused
at start-up, so a production deployment cannot run on keys published here.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

DEV_ENV = "development"


class ConfigError(RuntimeError):
    """The environment does not describe a runnable service."""


def _dev_secret(name: str) -> bytes:
    # Deterministic so that a development restart keeps tokens and printed QR codes valid;
    # refused outside development mode (see Settings.check_production_safety).
    return hashlib.sha256(b"estateops-development-only:" + name.encode()).digest()


def read_secret(env: Mapping[str, str], name: str) -> str | None:
    """The value of NAME, or the content of the file named by NAME_FILE."""
    if value := env.get(name):
        return value
    if path := env.get(f"{name}_FILE"):
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={path} cannot be read: {exc}") from exc
    return None


def _secret_bytes(env: Mapping[str, str], name: str, *, dev: bool, min_len: int = 32) -> bytes:
    raw = read_secret(env, name)
    if raw is None:
        if dev:
            # Printable, so the HMAC key PyJWT derives from the string is exactly these bytes.
            return _dev_secret(name).hex().encode()
        raise ConfigError(
            f"{name} is not set. Outside development mode every secret must come from the "
            f"environment or {name}_FILE; generate one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    data = raw.encode()
    if len(data) < min_len:
        raise ConfigError(f"{name} must be at least {min_len} characters long")
    if not dev and data == _dev_secret(name).hex().encode():
        raise ConfigError(f"{name} is the published development value; generate a new one")
    return data


@dataclass(frozen=True)
class DatabaseSettings:
    url: str | None = None
    pool_min: int = 2
    pool_max: int = 10
    command_timeout_s: float = 30.0


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: bytes = b""
    token_ttl: timedelta = timedelta(hours=12)  # one shift; phones log in again after
    login_max_failures_per_user: int = 10
    login_max_failures_per_address: int = 30
    login_window: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class KeySettings:
    # QR signing keys by key id; the current one signs, all verify (rotation).
    qr_keys: Mapping[str, bytes] = field(default_factory=dict)
    qr_current: str = "k1"
    # 32 bytes for AES-256-GCM sealing of NFC tag keys and webhook secrets at rest.
    kek: bytes = b""


@dataclass(frozen=True)
class MqttSettings:
    url: str | None = None
    shared_group: str | None = None
    client_id: str = "estateops-bridge"


@dataclass(frozen=True)
class Settings:
    env: str = DEV_ENV
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    keys: KeySettings = field(default_factory=KeySettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    max_body_bytes: int = 2 * 1024 * 1024
    attachments_dir: Path = Path("var/attachments")
    log_level: str = "INFO"
    using_dev_secrets: bool = False

    @property
    def is_dev(self) -> bool:
        return self.env == DEV_ENV

    def with_database(self, url: str) -> Settings:
        return replace(self, database=replace(self.database, url=url))

    def check_production_safety(self) -> None:
        """Outside development mode, refuse missing, short or published development secrets
        (whichever way the settings were made: the app factory calls this too)."""
        if self.is_dev:
            return
        wrong = []
        jwt = self.auth.jwt_secret
        if len(jwt) < 32 or jwt == _dev_secret("ESTATEOPS_JWT_SECRET").hex().encode():
            wrong.append("ESTATEOPS_JWT_SECRET")
        published_qr = _dev_secret("ESTATEOPS_QR_KEYS")
        if (
            not self.keys.qr_keys
            or self.keys.qr_current not in self.keys.qr_keys
            or any(len(k) < 32 or k == published_qr for k in self.keys.qr_keys.values())
        ):
            wrong.append("ESTATEOPS_QR_KEYS")
        if len(self.keys.kek) != 32 or self.keys.kek == _dev_secret("ESTATEOPS_KEK"):
            wrong.append("ESTATEOPS_KEK")
        if wrong or self.using_dev_secrets:
            raise ConfigError(
                f"refusing to run in {self.env} mode with missing, short or published "
                f"development secrets: {', '.join(wrong) or 'development keys'}; set them "
                "in the environment or in <NAME>_FILE"
            )


def _parse_qr_keys(raw: str) -> dict[str, bytes]:
    """`k2:secret,k1:oldsecret` -> {"k2": b"secret", "k1": b"oldsecret"}; the first is current."""
    keys: dict[str, bytes] = {}
    for part in raw.split(","):
        key_id, sep, secret = part.strip().partition(":")
        if not sep or not key_id.isalnum() or len(secret) < 32:
            raise ConfigError(
                "ESTATEOPS_QR_KEYS must look like 'k2:<32+ chars>,k1:<32+ chars>' "
                "(key id, colon, secret; the first one signs new codes)"
            )
        keys[key_id.lower()] = secret.encode()
    return keys


def _parse_kek(raw: str) -> bytes:
    try:
        kek = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except ValueError as exc:
        raise ConfigError("ESTATEOPS_KEK must be 32 bytes, base64url-encoded") from exc
    if len(kek) != 32:
        raise ConfigError("ESTATEOPS_KEK must be 32 bytes, base64url-encoded")
    return kek


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment (``os.environ`` by default)."""
    env = os.environ if env is None else env
    mode = env.get("ESTATEOPS_ENV", DEV_ENV)
    dev = mode == DEV_ENV
    using_dev = False

    jwt_raw = read_secret(env, "ESTATEOPS_JWT_SECRET")
    using_dev |= jwt_raw is None
    jwt_secret = _secret_bytes(env, "ESTATEOPS_JWT_SECRET", dev=dev)

    qr_raw = read_secret(env, "ESTATEOPS_QR_KEYS")
    if qr_raw:
        qr_keys = _parse_qr_keys(qr_raw)
        qr_current = next(iter(qr_keys))
    elif dev:
        using_dev = True
        qr_keys, qr_current = {"dev": _dev_secret("ESTATEOPS_QR_KEYS")}, "dev"
    else:
        raise ConfigError("ESTATEOPS_QR_KEYS is not set (e.g. 'k1:<32+ random chars>')")

    kek_raw = read_secret(env, "ESTATEOPS_KEK")
    if kek_raw:
        kek = _parse_kek(kek_raw)
    elif dev:
        using_dev = True
        kek = _dev_secret("ESTATEOPS_KEK")
    else:
        raise ConfigError(
            "ESTATEOPS_KEK is not set: 32 random bytes, base64url-encoded, e.g. "
            "python -c 'import secrets,base64; "
            "print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())'"
        )

    settings = Settings(
        env=mode,
        database=DatabaseSettings(
            url=read_secret(env, "DATABASE_URL") or None,
            pool_min=int(env.get("ESTATEOPS_DB_POOL_MIN", "2")),
            pool_max=int(env.get("ESTATEOPS_DB_POOL_MAX", "10")),
        ),
        auth=AuthSettings(
            jwt_secret=jwt_secret,
            token_ttl=timedelta(minutes=int(env.get("ESTATEOPS_TOKEN_TTL_MINUTES", "720"))),
        ),
        keys=KeySettings(qr_keys=qr_keys, qr_current=qr_current, kek=kek),
        mqtt=MqttSettings(
            url=read_secret(env, "MQTT_URL") or None,
            shared_group=env.get("MQTT_SHARED_GROUP") or None,
            client_id=env.get("MQTT_CLIENT_ID", "estateops-bridge"),
        ),
        max_body_bytes=int(env.get("ESTATEOPS_MAX_BODY_BYTES", str(2 * 1024 * 1024))),
        attachments_dir=Path(env.get("ESTATEOPS_ATTACHMENTS_DIR", "var/attachments")),
        log_level=env.get("ESTATEOPS_LOG_LEVEL", "INFO").upper(),
        using_dev_secrets=using_dev,
    )
    settings.check_production_safety()
    return settings
