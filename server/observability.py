"""Structured JSON logs with a request id, echoed in the X-Request-ID response header."""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import sys
import time
from typing import Any

import msgspec
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
REQUEST_ID_HEADER = "x-request-id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
access_log = logging.getLogger("estateops.access")
# A random per-process prefix and a counter: unique ids without a uuid4 per request.
_ID_PREFIX = os.urandom(5).hex()
_id_counter = itertools.count(1)


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):08x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extras."""

    _SKIP = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "color_message",  # uvicorn's ANSI-coloured copy of msg
    }

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if (rid := request_id_var.get()) is not None:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in self._SKIP and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(doc, enc_hook=str).decode()


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Take the caller's X-Request-ID (if sane) or make one; log one access line per request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = str(scope.get("method", ""))
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        rid = incoming if _SAFE_ID.match(incoming) else new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "%s %s %s",
                    method,
                    scope["path"],
                    status,
                    extra={
                        "method": method,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )
            request_id_var.reset(token)

    return middleware


def request_id_of(scope: Scope) -> str:
    """The request's id: set by the middleware, else the caller's (if sane), else a new one."""
    state = scope.setdefault("state", {})
    rid = state.get("request_id")
    if rid is None:
        incoming = next(
            (v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"x-request-id"),
            "",
        )
        rid = state["request_id"] = incoming if _SAFE_ID.match(incoming) else new_request_id()
    return str(rid)


async def echo_request_id(message: Message, scope: Scope) -> None:
    """before_send hook: every response carries X-Request-ID, including those answered
    before any route runs (unknown path, wrong method, missing token)."""
    if message["type"] == "http.response.start":
        MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = request_id_of(scope)
