"""Domain errors and their one mapping to RFC 9457 problem details.

Every 4xx/5xx leaves as ``application/problem+json`` with a stable ``type``
(``https://estateops.dev/problems/<slug>``). Domain code raises ``Problem``
subclasses; framework exceptions are translated here; anything unexpected is
logged with its request id and answered with a bare 500 (never a traceback).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    PermissionDeniedException,
    SerializationException,
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


class FieldError(msgspec.Struct, frozen=True):
    """One wrong field of a validation problem (a CSV import adds the ``line``)."""

    field: str
    message: str


class ProblemDetails(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every 4xx/5xx (RFC 9457), for the API schema; some types add members of
    their own (``field``, ``allowed``, ``current_status``, ``pending``, ...)."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str = ""
    errors: list[FieldError] = []


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
            # Litestar keys body errors by the handler's parameter ("data") at the top level.
            key = str(item.get("key") or "")
            key = "" if key == "data" else key
            named = _field_from_message(message)
            field = ".".join(part for part in (key, named) if part) or "body"
            errors.append({"field": field, "message": message})
    return errors


def _field_from_message(message: str) -> str:
    # msgspec says e.g. "Object contains unknown field `foo`" or
    # "Object missing required field `name`"; Litestar has moved the location to the key.
    for marker in ("unknown field `", "missing required field `"):
        if marker in message:
            return message.split(marker, 1)[1].split("`", 1)[0]
    if "- at `$." in message:
        return message.rsplit("- at `$.", 1)[1].rstrip("`")
    return ""


def _on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    headers = dict(exc.headers or {})
    if isinstance(exc, ValidationException):
        # Litestar reports a missing body as the KeyError text "'data'".
        if any(i.get("key") == "data" and i.get("message") == "'data'" for i in _items(exc.extra)):
            return problem_response(
                400, "malformed-body", "Malformed request body", "A JSON body is required", request
            )
        errors = _validation_errors(exc.extra)
        if not errors:
            return problem_response(
                400, "malformed-body", "Malformed request body", str(exc.detail), request, headers
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
    if status >= 500:
        return _on_unexpected(request, exc)
    if status == 400 and isinstance(exc.__cause__, SerializationException):
        # A body that does not parse (Litestar turns the decode error into a plain 400).
        return problem_response(
            400, "malformed-body", "Malformed request body", str(exc.detail), request, headers
        )
    slug = {
        400: "bad-request",
        405: "method-not-allowed",
        413: "payload-too-large",
        415: "unsupported-media-type",
        429: "rate-limited",
    }.get(status, "http-error")
    # The title stays the same for a type; what varies goes in the detail.
    title = HTTPStatus(status).phrase if status in _KNOWN_STATUSES else "Request refused"
    return problem_response(status, slug, title, str(exc.detail), request, headers)


def _items(extra: Any) -> list[dict[str, Any]]:
    return [i for i in extra if isinstance(i, dict)] if isinstance(extra, list) else []


_KNOWN_STATUSES = frozenset(s.value for s in HTTPStatus)


def _on_bad_argument(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.warning("refused a value the database cannot take: %s", exc)
    return problem_response(
        422, "validation", "Invalid input", "A value in the request is out of range", request
    )


# SQLSTATE class 22: asyncpg raises it when it cannot encode a bound argument (an id
# beyond bigint) before anything is sent, and PostgreSQL for values it cannot store.
_ArgumentError = asyncpg.exceptions.DataError

_DB_DOWN = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection cut mid-statement (MagicStack/asyncpg#784)
    asyncpg.exceptions.OperatorInterventionError,
    TimeoutError,
)


def _on_db_down(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return problem_response(
        503,
        "database-unavailable",
        "Service unavailable",
        "The database is not reachable; retry shortly.",
        request,
        {"Retry-After": "2"},
    )


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    if isinstance(exc, _ArgumentError):
        return _on_bad_argument(request, exc)
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
