"""Domain errors and their one mapping to RFC 9457 problem details.

Every 4xx/5xx leaves as ``application/problem+json`` with a stable ``type``
(``https://estateops.dev/problems/<slug>``). Domain code raises ``Problem``
subclasses; framework exceptions are translated here; anything unexpected is
logged with its request id and answered with a bare 500 (never a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.exceptions import (
    NotFoundException as LitestarNotFound,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

log = logging.getLogger("estateops.errors")

PROBLEM_BASE = "https://estateops.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """A refusal a client can act on: status, stable slug, human detail, extra members."""

    status: int = 400
    slug: str = "bad-request"
    title: str = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        slug: str | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if slug is not None:
            self.slug = slug
        if title is not None:
            self.title = title
        self.headers = headers or {}
        self.extra = extra


class NotFound(Problem):
    status, slug, title = 404, "not-found", "Not found"

    def __init__(self, what: str = "resource", **extra: Any) -> None:
        super().__init__(f"No such {what}", **extra)


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", "Forbidden"


class Conflict(Problem):
    status, slug, title = 409, "conflict", "Conflict"


class Invalid(Problem):
    """Input that parses but breaks a rule; names the field."""

    status, slug, title = 422, "validation", "Invalid input"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(
            f"{field}: {message}", errors=[{"field": field, "message": message}], **extra
        )


class Unavailable(Problem):
    status, slug, title = 503, "unavailable", "Service unavailable"


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str | None,
    request: Request[Any, Any, Any] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if request is not None:
        body["instance"] = request.url.path
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _on_problem(request: Request[Any, Any, Any], exc: Problem) -> Response[dict[str, Any]]:
    return problem_response(
        exc.status, exc.slug, exc.title, exc.detail, request, exc.headers, **exc.extra
    )


def _validation_errors(extra: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    for item in extra if isinstance(extra, list) else []:
        if isinstance(item, dict):
            message = str(item.get("message", "invalid"))
            key = item.get("key")
            field = str(key) if key else _field_from_message(message)
            errors.append({"field": field, "message": message})
    return errors


def _field_from_message(message: str) -> str:
    # msgspec says e.g. "Expected `int`, got `str` - at `$.site_ids[0]`" or
    # "Object contains unknown field `foo` - at `$`".
    if "unknown field `" in message:
        return message.split("unknown field `", 1)[1].split("`", 1)[0]
    if "missing required field `" in message:
        return message.split("missing required field `", 1)[1].split("`", 1)[0]
    if "- at `$." in message:
        return message.rsplit("- at `$.", 1)[1].rstrip("`")
    return "body"


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        errors = _validation_errors(exc.extra)
        text = " ".join(e["message"] for e in errors) or str(exc.detail)
        if "malformed" in text.lower() or "json is" in text.lower() or not errors:
            return problem_response(
                400, "malformed-body", "Malformed request body", text, request, headers
            )
        return problem_response(
            422,
            "validation",
            "Invalid input",
            "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            request,
            headers,
            errors=errors,
        )
    if isinstance(exc, NotAuthorizedException):
        headers.setdefault("WWW-Authenticate", 'Bearer realm="estateops"')
        return problem_response(
            401,
            "unauthorized",
            "Authentication required",
            "A valid bearer token is required",
            request,
            headers,
        )
    if isinstance(exc, PermissionDeniedException):
        return problem_response(403, "forbidden", "Forbidden", exc.detail, request, headers)
    if isinstance(exc, LitestarNotFound) or status == 404:
        return problem_response(404, "not-found", "Not found", "No such resource", request)
    slug = {
        405: "method-not-allowed",
        413: "payload-too-large",
        415: "unsupported-media-type",
        429: "rate-limited",
    }.get(status, "http-error")
    if status >= 500:
        return _on_unexpected(request, exc)
    return problem_response(status, slug, str(exc.detail), None, request, headers)


_DB_DOWN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    TimeoutError,
)


def _on_db_down(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return problem_response(
        503,
        "database-unavailable",
        "Service unavailable",
        "The database is not reachable; retry shortly. Nothing was stored by this request.",
        request,
        {"Retry-After": "2"},
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, _DB_DOWN):
        return _on_db_down(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "Something went wrong on our side; the request id is in the X-Request-ID header.",
        request,
    )


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    Problem: _on_problem,
    HTTPException: _on_http_exception,
    Exception: _on_unexpected,
}
