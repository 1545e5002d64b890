"""Secrets at start-up, the way an operator meets them: outside development mode each command
(and the app factory itself) refuses missing, short or published development secrets with a
message naming them; in development mode `up` says loudly that it runs on development keys.

test_config.py covers load_settings; test_up.py the banner of a full `up`.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.app import create_app
from server.config import ConfigError, Settings, load_settings
from server.embedded import free_port

JWT = "j" * 40
QR = "k1:" + "q" * 40
KEK = base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
SECRETS = {"ESTATEOPS_JWT_SECRET": JWT, "ESTATEOPS_QR_KEYS": QR, "ESTATEOPS_KEK": KEK}
DEV = load_settings({"ESTATEOPS_ENV": "development"})


def _published_kek() -> str:
    return base64.urlsafe_b64encode(DEV.keys.kek).decode().rstrip("=")


def _command() -> list[str]:
    """The installed `estateops` script, as an operator runs it (the module if not on PATH)."""
    script = Path(sys.executable).parent / "estateops"
    found = str(script) if script.exists() else shutil.which("estateops")
    return [found] if found else [sys.executable, "-m", "server.cli"]


def _env(**changes: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ESTATEOPS_") and k not in ("DATABASE_URL", "MQTT_URL")
    }
    env["DATABASE_URL"] = "postgresql://nobody@127.0.0.1:1/none"  # never reached
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port something listens on: `up` and `serve` stop there before starting."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))
        s.listen()
        yield s.getsockname()[1]


PRODUCTION_CASES = {
    "no secrets at all": {},
    "no JWT secret": {**SECRETS, "ESTATEOPS_JWT_SECRET": None},
    "a short JWT secret": {**SECRETS, "ESTATEOPS_JWT_SECRET": "short"},
    "the published JWT secret": {
        **SECRETS,
        "ESTATEOPS_JWT_SECRET": DEV.auth.jwt_secret.decode(),
    },
    "no QR keys": {**SECRETS, "ESTATEOPS_QR_KEYS": None},
    "no KEK": {**SECRETS, "ESTATEOPS_KEK": None},
    "the published KEK": {**SECRETS, "ESTATEOPS_KEK": _published_kek()},
    "a secret file that is not there": {
        **SECRETS,
        "ESTATEOPS_JWT_SECRET": None,
        "ESTATEOPS_JWT_SECRET_FILE": "/nonexistent/jwt",
    },
}


@pytest.mark.parametrize("case", sorted(PRODUCTION_CASES))
def test_serve_refuses_to_start_in_production_without_real_secrets(case: str) -> None:
    given = PRODUCTION_CASES[case]
    env = _env(ESTATEOPS_ENV="production", **{k: v for k, v in given.items()})
    done = _run(["serve", "--port", str(free_port())], env)
    assert done.returncode != 0, done.stdout + done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert "ESTATEOPS_" in done.stderr  # names the secret to set
    assert "Traceback" not in done.stderr
    assert "Uvicorn running" not in done.stdout + done.stderr


@pytest.mark.parametrize("command", [["up"], ["scheduler"], ["migrate"], ["broker", "--port", "0"]])
def test_every_command_refuses_to_start_in_production_without_secrets(command: list[str]) -> None:
    done = _run(command, _env(ESTATEOPS_ENV="staging"))
    assert done.returncode != 0
    assert "ESTATEOPS_JWT_SECRET is not set" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_serve_in_production_with_real_secrets_gets_past_the_check(taken_port: int) -> None:
    """The control: the same command with real secrets is refused only for its port."""
    done = _run(["serve", "--port", str(taken_port)], _env(ESTATEOPS_ENV="production", **SECRETS))
    assert done.returncode != 0
    assert f"port {taken_port}" in done.stderr, done.stderr
    assert "ESTATEOPS_" not in done.stderr


def test_the_app_factory_refuses_production_settings_with_development_keys() -> None:
    """Settings made by hand (a test, an embedding) get the same check as the environment's."""
    production = replace(DEV, env="production")
    with pytest.raises(ConfigError, match="ESTATEOPS_JWT_SECRET"):
        create_app(production)
    empty = Settings(env="production")
    with pytest.raises(ConfigError, match="ESTATEOPS_JWT_SECRET, ESTATEOPS_QR_KEYS, ESTATEOPS_KEK"):
        create_app(empty)
    real = load_settings({"ESTATEOPS_ENV": "production", **SECRETS})
    assert not real.using_dev_secrets
    assert create_app(real).state.settings is real


def test_the_app_factory_reads_the_environment_and_refuses_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`uvicorn server.app:create_app --factory` takes no settings: the environment's."""
    for name in (*SECRETS, "ESTATEOPS_JWT_SECRET_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ESTATEOPS_ENV", "production")
    with pytest.raises(ConfigError, match="ESTATEOPS_JWT_SECRET"):
        create_app()


def test_up_says_loudly_that_it_uses_development_keys(taken_port: int) -> None:
    # Stopped at its port check, before any database is started; the banner comes first.
    done = _run(["up", "--port", str(taken_port)], _env(ESTATEOPS_ENV=None))
    assert done.returncode != 0
    lines = done.stdout.splitlines()
    assert any("DEVELOPMENT MODE" in line for line in lines[:3]), done.stdout
    assert "development keys" in done.stdout
    assert f"port {taken_port}" in done.stderr


def test_up_with_real_secrets_prints_no_development_banner(taken_port: int) -> None:
    done = _run(["up", "--port", str(taken_port)], _env(ESTATEOPS_ENV="development", **SECRETS))
    assert done.returncode != 0
    assert "DEVELOPMENT MODE" not in done.stdout
    assert f"port {taken_port}" in done.stderr


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_up_names_even_one_development_key(taken_port: int, missing: str) -> None:
    env = _env(ESTATEOPS_ENV="development", **{**SECRETS, missing: None})
    done = _run(["up", "--port", str(taken_port)], env)
    assert "DEVELOPMENT MODE" in done.stdout
