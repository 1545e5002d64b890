"""The application factory: routes, auth, errors, OpenAPI, metrics, lifespan."""

from __future__ import annotations

import re
from datetime import time
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components, OpenAPIType, Schema
from litestar.plugins import OpenAPISchemaPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.routes import HTTPRoute
from litestar.types import ControllerRouterHandler

from server import migrate
from server.alarms.routes import AlarmController
from server.alerts.routes import AlertController
from server.auth import PUBLIC_PATHS, make_jwt_auth, provide_principal
from server.checkpoints.routes import CheckpointController
from server.config import Settings, load_settings
from server.db import Pool, lifespan, provide_db
from server.devices.routes import DeadLetterController, DeviceController
from server.errors import (
    EXCEPTION_HANDLERS,
    PROBLEM_MEDIA_TYPE,
    ProblemDetails,
    problem_response,
)
from server.incidents.routes import IncidentController
from server.live.hub import lifespan as live_lifespan
from server.live.routes import LiveController
from server.notifications.routes import WebhookController
from server.observability import configure_logging, echo_request_id, request_id_middleware
from server.patrol.batcher import ScanBatcher
from server.patrol.routes import (
    PatrolSupervisionController,
    RoundController,
    RouteController,
    ScanController,
)
from server.sites.routes import SiteController
from server.tickets.routes import TicketController, TicketReportController, TicketSiteController
from server.users.routes import AuthController, UserController


@get("/health", tags=["ops"], summary="The process is alive", exclude_from_auth=True)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/ready", tags=["ops"], summary="The database is reachable and migrations are current")
async def ready(state: State, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    pool: Pool = state.pool
    try:
        async with pool.acquire(timeout=2) as conn:
            missing = await migrate.pending(conn)
    except migrate.MigrationError as exc:
        return problem_response(503, "not-ready", "Not ready", str(exc), request)
    except Exception as exc:  # any failure to reach the database means not ready
        return problem_response(
            503,
            "not-ready",
            "Not ready",
            f"database unreachable: {type(exc).__name__}",
            request,
            {"Retry-After": "2"},
        )
    if missing:
        return problem_response(
            503,
            "not-ready",
            "Not ready",
            f"{len(missing)} migration(s) not applied; run `estateops migrate`",
            request,
            pending=missing,
        )
    return Response({"status": "ready"}, media_type=MediaType.JSON)


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def route_handlers() -> list[ControllerRouterHandler]:
    """Every domain's routes; a new domain adds its controllers here."""
    return [
        health,
        ready,
        MetricsController,
        AuthController,
        UserController,
        SiteController,
        CheckpointController,
        RouteController,
        RoundController,
        ScanController,
        PatrolSupervisionController,
        DeviceController,
        DeadLetterController,
        AlarmController,
        TicketController,
        TicketSiteController,
        TicketReportController,
        AlertController,
        LiveController,
        IncidentController,
        WebhookController,
    ]


class LocalTimeSchema(OpenAPISchemaPlugin):
    """A time of day on the wire, as msgspec writes it (``HH:MM:SS[.ffffff]``, no offset: the
    site's own clock). Litestar documents ``datetime.time`` as a duration, which it is not."""

    @staticmethod
    def is_plugin_supported_type(value: Any) -> bool:
        return value is time

    def to_openapi_schema(self, field_definition: Any, schema_creator: Any) -> Schema:
        return Schema(
            type=OpenAPIType.STRING,
            pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?$",
            description="Time of day on the site's clock, HH:MM:SS",
            examples=["22:00:00"],
        )


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetails,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


_PROBLEMS = {
    400: _problem("Malformed request (a body or parameter that does not parse)"),
    401: _problem("No valid bearer token"),
    403: _problem("The caller's role may not do this"),
    404: _problem("No such thing, or not of the caller's sites"),
    409: _problem("Conflicts with what is stored (a duplicate, a move the status forbids)"),
    413: _problem("Request body too large"),
    415: _problem("Unsupported media type"),
    422: _problem("Invalid input; `errors` names each wrong field"),
    429: _problem("Too many attempts; see Retry-After"),
    500: _problem("Unexpected error; the X-Request-ID header identifies it in the logs"),
    503: _problem("The database is unreachable; retry after Retry-After seconds"),
}
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def document_problems(app: Litestar) -> None:
    """Put in the API schema what each operation may answer besides its success: problem
    details, by status; and mark the operations that need no token as such."""
    public = [re.compile(p) for p in PUBLIC_PATHS]
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        is_public = any(p.match(route.path) for p in public)
        for handler in route.route_handlers:
            if not handler.resolve_include_in_schema():
                continue
            statuses = {500, 503}
            if route.path.startswith("/api/"):
                statuses |= {400, 404, 422}
            if not is_public:
                statuses.add(401)
            if handler.resolve_guards():
                statuses.add(403)
            if handler.http_methods & _WRITES:
                statuses |= {409, 413, 415}
                if is_public:
                    statuses |= {401, 429}  # login: wrong credentials, throttling
            given = dict(handler.responses or {})
            handler.responses = {s: _PROBLEMS[s] for s in sorted(statuses)} | given
            if is_public:
                handler.security = [{}]  # an empty requirement: no token needed


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API for these settings (read from the environment when not given)."""
    settings = settings or load_settings()
    settings.check_production_safety()
    configure_logging(settings.log_level)
    jwt_auth = make_jwt_auth(settings)
    openapi = OpenAPIConfig(
        title="EstateOps API",
        version="0.1.0",
        description="Patrols, repairs, sensors and incidents for property management.",
        path="/schema",
        render_plugins=[ScalarRenderPlugin()],
        components=[Components()],
    )
    prometheus = PrometheusConfig(app_name="estateops", prefix="estateops", group_path=True)
    app = Litestar(
        route_handlers=route_handlers(),
        lifespan=[lifespan(settings), live_lifespan(settings.database.url)],
        state=State({"settings": settings, "jwt_auth": jwt_auth, "scan_batcher": ScanBatcher()}),
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        on_app_init=[jwt_auth.on_app_init],
        openapi_config=openapi,
        plugins=[LocalTimeSchema()],
        middleware=[request_id_middleware, prometheus.middleware],
        before_send=[echo_request_id],
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # our JSON formatter (server.observability) owns the root logger
        debug=False,
    )
    document_problems(app)
    return app
