"""Settings from the environment: production refuses missing, short or published secrets."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest

from server.config import ConfigError, load_settings

JWT = "j" * 40
QR = "k2:" + "q" * 40 + ",k1:" + "o" * 40
KEK = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
PRODUCTION = {
    "ESTATEOPS_ENV": "production",
    "ESTATEOPS_JWT_SECRET": JWT,
    "ESTATEOPS_QR_KEYS": QR,
    "ESTATEOPS_KEK": KEK,
}


def _without(name: str) -> dict[str, str]:
    return {k: v for k, v in PRODUCTION.items() if k != name}


def test_production_with_every_secret_from_the_environment() -> None:
    s = load_settings(PRODUCTION)
    assert not s.is_dev
    assert not s.using_dev_secrets
    assert s.auth.jwt_secret == JWT.encode()
    assert s.keys.qr_keys == {"k2": b"q" * 40, "k1": b"o" * 40}
    assert s.keys.qr_current == "k2"  # the first one signs
    assert s.keys.kek == bytes(range(32))


@pytest.mark.parametrize("name", ["ESTATEOPS_JWT_SECRET", "ESTATEOPS_QR_KEYS", "ESTATEOPS_KEK"])
def test_production_refuses_a_missing_secret(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(_without(name))
    # An empty value is as good as missing.
    with pytest.raises(ConfigError, match=name):
        load_settings({**PRODUCTION, name: ""})


def test_any_mode_but_development_is_strict() -> None:
    with pytest.raises(ConfigError):
        load_settings({**_without("ESTATEOPS_JWT_SECRET"), "ESTATEOPS_ENV": "staging"})


def test_secrets_from_files(tmp_path: Path) -> None:
    env = {"ESTATEOPS_ENV": "production"}
    for name, value in _without("ESTATEOPS_ENV").items():
        path = tmp_path / name.lower()
        path.write_text(value + "\n", encoding="utf-8")  # editors add a newline
        env[f"{name}_FILE"] = str(path)

    s = load_settings(env)

    assert s.auth.jwt_secret == JWT.encode()
    assert s.keys.qr_current == "k2"
    assert s.keys.kek == bytes(range(32))
    assert not s.using_dev_secrets


def test_a_value_wins_over_a_file(tmp_path: Path) -> None:
    path = tmp_path / "jwt"
    path.write_text("f" * 40, encoding="utf-8")
    s = load_settings({**PRODUCTION, "ESTATEOPS_JWT_SECRET_FILE": str(path)})
    assert s.auth.jwt_secret == JWT.encode()


def test_an_unreadable_secret_file_is_a_config_error(tmp_path: Path) -> None:
    env = {**_without("ESTATEOPS_JWT_SECRET"), "ESTATEOPS_JWT_SECRET_FILE": str(tmp_path / "nope")}
    with pytest.raises(ConfigError, match="ESTATEOPS_JWT_SECRET_FILE"):
        load_settings(env)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ESTATEOPS_JWT_SECRET", "short"),
        ("ESTATEOPS_JWT_SECRET", "x" * 31),
        ("ESTATEOPS_QR_KEYS", "k1:short"),
        ("ESTATEOPS_QR_KEYS", "q" * 40),  # no key id
        ("ESTATEOPS_QR_KEYS", "k2:" + "q" * 40 + ",k1:short"),
        ("ESTATEOPS_KEK", base64.urlsafe_b64encode(b"x" * 16).decode()),
        ("ESTATEOPS_KEK", "not base64 at all!"),
    ],
)
def test_short_or_malformed_secrets_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({**PRODUCTION, name: value})


def test_short_secrets_are_refused_in_development_too() -> None:
    with pytest.raises(ConfigError, match="ESTATEOPS_JWT_SECRET"):
        load_settings({"ESTATEOPS_ENV": "development", "ESTATEOPS_JWT_SECRET": "short"})


def test_the_published_development_jwt_secret_is_refused_in_production() -> None:
    published = load_settings({}).auth.jwt_secret.decode()
    with pytest.raises(ConfigError, match="development"):
        load_settings({**PRODUCTION, "ESTATEOPS_JWT_SECRET": published})


def test_development_mode_uses_marked_dev_secrets() -> None:
    s = load_settings({})
    assert s.is_dev
    assert s.using_dev_secrets
    assert len(s.auth.jwt_secret) >= 32
    assert s.keys.qr_keys
    assert len(s.keys.kek) == 32
    # Deterministic, so tokens and printed QR codes survive a development restart.
    again = load_settings({"ESTATEOPS_ENV": "development"})
    assert again.auth.jwt_secret == s.auth.jwt_secret
    assert again.keys == s.keys


@pytest.mark.parametrize("missing", ["ESTATEOPS_JWT_SECRET", "ESTATEOPS_QR_KEYS", "ESTATEOPS_KEK"])
def test_development_marks_even_one_dev_secret(missing: str) -> None:
    env = {**_without(missing), "ESTATEOPS_ENV": "development"}
    assert load_settings(env).using_dev_secrets
    assert not load_settings({**PRODUCTION, "ESTATEOPS_ENV": "development"}).using_dev_secrets


def test_the_dev_jwt_secret_is_the_hmac_key_as_configured() -> None:
    # PyJWT turns a str key into UTF-8; the key must survive that unchanged.
    s = load_settings({})
    assert s.auth.jwt_secret.decode().encode() == s.auth.jwt_secret


def test_plain_settings() -> None:
    s = load_settings(
        {
            **PRODUCTION,
            "DATABASE_URL": "postgresql://u@h/db",
            "ESTATEOPS_TOKEN_TTL_MINUTES": "60",
            "ESTATEOPS_MAX_BODY_BYTES": "1000",
            "ESTATEOPS_LOG_LEVEL": "debug",
        }
    )
    assert s.database.url == "postgresql://u@h/db"
    assert s.auth.token_ttl == timedelta(minutes=60)
    assert s.max_body_bytes == 1000
    assert s.log_level == "DEBUG"
    assert load_settings(PRODUCTION).database.url is None
