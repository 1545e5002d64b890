"""Broker credentials for gateways: lines of a Mosquitto 2 password file.

A gateway logs in as ``<site_code>/<gateway_id>``; the shipped ACL
(mqtt_bridge/broker/acl) lets it publish only under
``estateops/v1/<site_code>/<gateway_id>/#``. The hash is Mosquitto's own format
(``$7$``: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt), so the file is used
as is by ``password_file``; Mosquitto reads it again on SIGHUP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
from pathlib import Path

ITERATIONS = 101
_SEGMENT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def gateway_username(site_code: str, gateway_id: str) -> str:
    """The broker username of a gateway; both parts as in its topics."""
    for name, value in (("site_code", site_code), ("gateway_id", gateway_id)):
        if not _SEGMENT.match(value):
            raise ValueError(f"{name} must be 1-64 of A-Z a-z 0-9 _ . - (as in the topic)")
    return f"{site_code}/{gateway_id}"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto's $7$ hash of a password."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, ITERATIONS)
    return f"$7${ITERATIONS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    expected = hash_password(password, salt=salt)
    return secrets.compare_digest(expected, hashed)


def set_credentials(path: Path, username: str, password: str | None = None) -> str:
    """Add or replace a user in a password file (mode 0600); returns the password."""
    if ":" in username or "\n" in username:
        raise ValueError("a username cannot contain ':' or a newline")
    password = password or secrets.token_urlsafe(18)
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if line and line.split(":", 1)[0] != username]
    kept.append(f"{username}:{hash_password(password)}")
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("\n".join(kept) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return password
