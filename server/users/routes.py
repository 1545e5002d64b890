"""HTTP routes: login, the caller, and user administration (admins and managers)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Controller, Request, get, patch, post
from litestar.datastructures import State
from litestar.security.jwt import JWTAuth, Token

from server.auth import (
    MANAGING_ROLES,
    Principal,
    hash_password,
    issue_token,
    require_roles,
    verify_password,
)
from server.config import Settings
from server.db import Connection, Pool
from server.errors import Forbidden, Invalid, NotFound, Problem
from server.pagination import DEFAULT_LIMIT, Limit, Page, page_of
from server.sites.store import unit_site
from server.users import store
from server.users.models import LoginIn, TokenOut, User, UserIn, UserPatch


class LoginFailed(Problem):
    status, slug, title = 401, "invalid-credentials", "Invalid credentials"


def _client_address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "unknown"


class AuthController(Controller):
    path = "/api"
    tags = ["auth"]

    @post("/auth/login", summary="Exchange a username and password for a bearer token")
    async def login(self, request: Request[Any, Any, Any], state: State, data: LoginIn) -> TokenOut:
        settings: Settings = state.settings
        pool: Pool = state.pool
        username = data.username.strip().lower()
        address = _client_address(request)
        # No request transaction here: a failed attempt must be recorded even though we refuse.
        async with pool.acquire() as conn:
            by_user, by_address = await store.recent_failures(
                conn, username, address, settings.auth.login_window
            )
            if (
                by_user >= settings.auth.login_max_failures_per_user
                or by_address >= settings.auth.login_max_failures_per_address
            ):
                raise Problem(
                    "Too many failed logins; wait a few minutes and try again",
                    status=429,
                    slug="rate-limited",
                    title="Too many attempts",
                    headers={"Retry-After": str(int(settings.auth.login_window.total_seconds()))},
                )
            record = await store.login_record(conn, username)
            ok = await verify_password(record.password_hash if record else None, data.password)
            if not ok or record is None or not record.active:
                await store.record_failure(conn, username, address)
                raise LoginFailed("The username or password is wrong")
            await store.clear_failures(conn, username)
        jwt_auth: JWTAuth[Principal, Token] = state.jwt_auth
        principal = Principal(
            id=record.id,
            username=record.username,
            role=record.role,
            site_ids=frozenset(record.site_ids),
            unit_id=record.unit_id,
        )
        return TokenOut(
            access_token=issue_token(jwt_auth, settings, principal),
            expires_in=int(settings.auth.token_ttl.total_seconds()),
        )

    @get("/me", summary="The caller's own profile")
    async def me(self, db: Connection, principal: Principal) -> User:
        user = await store.get_user(db, principal.id)
        if user is None:
            raise NotFound("user")
        return user


async def _checked_sites(
    db: Connection, principal: Principal, role: str, site_ids: list[int], unit_id: int | None
) -> list[int]:
    """The sites a new or changed user belongs to, all visible to the caller."""
    if role == "resident":
        if unit_id is None:
            raise Invalid("unit_id", "a resident needs the unit they live in")
        site = await unit_site(db, unit_id)
        if site is None or not principal.sees_site(site):
            raise NotFound("unit")
        return [site]
    if unit_id is not None:
        raise Invalid("unit_id", "only residents are linked to a unit")
    if role != "admin" and not site_ids:
        raise Invalid("site_ids", "staff must belong to at least one site")
    existing = await store.existing_sites(db, site_ids)
    for site_id in site_ids:
        if site_id not in existing or not principal.sees_site(site_id):
            raise NotFound("site")
    return site_ids


async def _managed_user(db: Connection, principal: Principal, user_id: int) -> User:
    user = await store.get_user(db, user_id)
    if user is None:
        raise NotFound("user")
    if principal.is_admin:
        return user
    if not set(user.site_ids) & principal.site_ids:
        raise NotFound("user")
    if user.role == "admin":
        raise Forbidden("Only an admin may change an admin")
    return user


class UserController(Controller):
    path = "/api/users"
    tags = ["users"]
    guards = [require_roles(*MANAGING_ROLES)]

    @post("/", summary="Create a user (admins and managers)")
    async def create_user(self, db: Connection, principal: Principal, data: UserIn) -> User:
        if data.role == "admin" and not principal.is_admin:
            raise Forbidden("Only an admin may create an admin")
        sites = await _checked_sites(db, principal, data.role, data.site_ids, data.unit_id)
        password_hash = await asyncio.to_thread(hash_password, data.password)
        return await store.create_user(
            db, msgspec.structs.replace(data, site_ids=sites), password_hash
        )

    @get("/", summary="Users of the caller's sites")
    async def list_users(
        self, db: Connection, principal: Principal, after: int = 0, limit: Limit = DEFAULT_LIMIT
    ) -> Page[User]:
        return page_of(await store.list_users(db, principal.visible_sites(), after, limit), limit)

    @get("/{user_id:int}", summary="One user")
    async def get_user(self, db: Connection, principal: Principal, user_id: int) -> User:
        return await _managed_user(db, principal, user_id)

    @patch("/{user_id:int}", summary="Change a user's profile, sites, skills or password")
    async def patch_user(
        self, db: Connection, principal: Principal, user_id: int, data: UserPatch
    ) -> User:
        user = await _managed_user(db, principal, user_id)
        if data.site_ids is not None:
            sites = await _checked_sites(db, principal, user.role, data.site_ids, user.unit_id)
            # Memberships of sites the caller cannot see are not theirs to remove.
            hidden = [s for s in user.site_ids if not principal.sees_site(s)]
            data = msgspec.structs.replace(data, site_ids=sites + hidden)
        password_hash = (
            await asyncio.to_thread(hash_password, data.password) if data.password else None
        )
        await store.patch_user(db, user_id, data, password_hash)
        changed = await store.get_user(db, user_id)
        assert changed is not None
        return changed
