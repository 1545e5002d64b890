"""Who is calling: password hashing, JWT bearer tokens, roles and site scoping.

The token carries the user's id, role and sites, so an authenticated request
costs no database round trip; tokens are short-lived (one shift by default).
Anything of a site the caller is not a member of answers 404, never 403, so
ids of other sites do not leak.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware.authentication import AuthenticationResult
from litestar.security.jwt import JWTAuth, JWTAuthenticationMiddleware, Token
from litestar.types import Guard

from server.config import Settings
from server.errors import NotFound

ROLES = (
    "admin",
    "manager",
    "supervisor",
    "guard",
    "technician",
    "cleaner",
    "front_desk",
    "resident",
)
STAFF_ROLES = frozenset(ROLES) - {"resident"}
MANAGING_ROLES = frozenset({"admin", "manager"})
SUPERVISING_ROLES = frozenset({"admin", "manager", "supervisor"})

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
# Verified against when the username is unknown, so both paths cost the same.
_DUMMY_HASH = _hasher.hash("estateops-timing-equaliser")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    """Constant-work check: an unknown user still pays for one argon2 verification."""

    def _verify() -> bool:
        try:
            return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(_verify)


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, rebuilt from the token's claims."""

    id: int
    username: str
    role: str
    site_ids: frozenset[int]
    unit_id: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_staff(self) -> bool:
        return self.role in STAFF_ROLES

    def sees_site(self, site_id: int) -> bool:
        return self.is_admin or site_id in self.site_ids

    def require_site(self, site_id: int, what: str = "site") -> None:
        """404 (not 403) for a site the caller is not a member of."""
        if not self.sees_site(site_id):
            raise NotFound(what)

    def visible_sites(self) -> list[int] | None:
        """Site ids to filter queries by; None means every site (admin)."""
        return None if self.is_admin else sorted(self.site_ids)


async def _principal_from_token(
    token: Token, connection: ASGIConnection[Any, Any, Any, Any]
) -> Principal | None:
    extras = token.extras
    try:
        role = str(extras["role"])
        if role not in ROLES:
            return None
        unit = extras.get("unit")
        return Principal(
            id=int(token.sub),
            username=str(extras["usr"]),
            role=role,
            site_ids=frozenset(int(s) for s in extras.get("sites", [])),
            unit_id=int(unit) if unit is not None else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


# Only the login, the probes, the metrics and the API docs are reachable without a token.
PUBLIC_PATHS = [r"^/api/auth/login$", r"^/(health|ready|metrics)$", r"^/schema(/|$)"]


class CachedJWTMiddleware(JWTAuthenticationMiddleware):
    """Litestar's JWT middleware, remembering tokens it has already verified.

    A phone sends the same token with every request of a shift; verifying it once
    (signature, claims, principal) instead of per request saves ~0.1 ms each time.
    Expiry is still checked on every use; the cache is bounded and per process.
    """

    _MAX = 10_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verified: dict[str, tuple[float, AuthenticationResult]] = {}

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        hit = self._verified.get(encoded_token)
        if hit is not None and hit[0] > time.time():
            return hit[1]
        result = await super().authenticate_token(encoded_token, connection)
        if len(self._verified) >= self._MAX:
            self._verified.clear()
        token = result.auth
        if isinstance(token, Token):
            self._verified[encoded_token] = (token.exp.timestamp(), result)
        return result


def make_jwt_auth(settings: Settings) -> JWTAuth[Principal, Token]:
    return JWTAuth[Principal, Token](
        # PyJWT encodes a str key as UTF-8, so this round-trips to exactly jwt_secret.
        token_secret=settings.auth.jwt_secret.decode(),
        retrieve_user_handler=_principal_from_token,
        algorithm="HS256",
        default_token_expiration=settings.auth.token_ttl,
        exclude=PUBLIC_PATHS,
        require_claims=["exp", "sub", "iat"],
        description="Bearer token from POST /api/auth/login",
        authentication_middleware_class=CachedJWTMiddleware,
    )


def issue_token(
    jwt_auth: JWTAuth[Principal, Token], settings: Settings, principal: Principal
) -> str:
    return jwt_auth.create_token(
        identifier=str(principal.id),
        token_expiration=settings.auth.token_ttl,
        token_extras={
            "usr": principal.username,
            "role": principal.role,
            "sites": sorted(principal.site_ids),
            "unit": principal.unit_id,
        },
    )


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    user = connection.scope.get("user")
    if not isinstance(user, Principal):
        raise NotAuthorizedException()
    return user


def require_roles(*roles: str) -> Guard:
    """A route guard: only these roles may call the handler (403 for the others)."""
    allowed = frozenset(roles)
    unknown = allowed - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")

    # async: Litestar runs a sync guard in a worker thread, a costly hop on every request.
    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if principal_of(connection).role not in allowed:
            raise PermissionDeniedException("Your role may not do this")

    guard.__name__ = f"require_roles({','.join(sorted(allowed))})"
    return guard


def staff_only() -> Guard:
    return require_roles(*STAFF_ROLES)


def provide_principal(request: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """Dependency: the caller."""
    return principal_of(request)
