"""The application factory: routes, auth, errors, OpenAPI, metrics, lifespan."""

from __future__ import annotations

from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.config.compression import CompressionConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.openapi.spec import Components
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import ControllerRouterHandler

from server import migrate
from server.alarms.routes import AlarmController
from server.alerts.routes import AlertController
from server.auth import make_jwt_auth, provide_principal
from server.checkpoints.routes import CheckpointController
from server.config import Settings, load_settings
from server.db import Pool, lifespan, provide_db
from server.devices.routes import DeadLetterController, DeviceController
from server.errors import EXCEPTION_HANDLERS, problem_response
from server.live.hub import lifespan as live_lifespan
from server.live.routes import LiveController
from server.observability import configure_logging, echo_request_id, request_id_middleware
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
    ]


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the API for these settings (read from the environment when not given)."""
    settings = settings or load_settings()
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
    return Litestar(
        route_handlers=route_handlers(),
        lifespan=[lifespan(settings), live_lifespan(settings.database.url)],
        state=State({"settings": settings, "jwt_auth": jwt_auth}),
        dependencies={
            "db": Provide(provide_db),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        exception_handlers=EXCEPTION_HANDLERS,
        on_app_init=[jwt_auth.on_app_init],
        openapi_config=openapi,
        middleware=[request_id_middleware, prometheus.middleware],
        before_send=[echo_request_id],
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024),
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # our JSON formatter (server.observability) owns the root logger
        debug=False,
    )
