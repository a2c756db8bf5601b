"""The application factory: `create_app(settings)` builds the services, the routes, the
endpoint table and the middleware, with a lifespan that loads the models."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__ as app_version
from app.api import admin, alerts, auth, fraud, health, inference, metrics, models
from app.api.auth import require_admin, require_key
from app.api.console import install_console
from app.api.dispatch import EndpointDispatcher
from app.api.docs import install_docs
from app.api.draining import DrainMiddleware
from app.api.endpoints import EndpointTable
from app.api.errors import install_error_handlers
from app.api.open_inference import rest as open_inference_rest
from app.api.open_inference.grpc_server import GrpcServer
from app.api.request_log import RequestLogMiddleware
from app.api.services import Services
from app.errors import StoreUnavailable
from app.fraud.history.store import HistoryStore
from app.serving.registry import ModelRegistry
from app.settings import Settings

logger = logging.getLogger(__name__)

PRUNE_EVERY_S = 60.0
WATCH_EVERY_S = 1.0

DESCRIPTION = """Image classification and card-fraud scoring on ONNX Runtime, with
server-side dynamic batching. Errors share one shape: `{"error": {"code", "message"}}`."""


async def _load_then_poll(registry: ModelRegistry, poll_interval_s: float) -> None:
    """Load the repository, then pick up new and removed versions every poll interval."""
    await registry.load_all()
    while poll_interval_s > 0:
        await asyncio.sleep(poll_interval_s)
        try:
            await registry.sync()
        except Exception:  # a bad scan must not end polling for good
            logger.exception("model repository scan failed")


async def _open_history(history: HistoryStore) -> None:
    """Open the fraud history; a store that cannot open leaves the stateful fraud routes
    answering 503 and everything else serving, until `_watch_history` sees it back."""
    try:
        await history.open()
    except StoreUnavailable as exc:
        logger.error("%s", exc.message)
        return
    logger.info("fraud history: %d payments at %s", history.size().payments, history.where)


async def _watch_history(history: HistoryStore, interval_s: float) -> None:
    """Keep `history.problem` (and so /readyz) current, and reconnect when the store is
    back; every request also tries on its own."""
    while True:
        await asyncio.sleep(interval_s)
        before = history.problem
        await history.check()
        if history.problem != before:
            if history.problem is None:
                logger.info("fraud history available again at %s", history.where)
            else:
                logger.error("%s", history.problem)


async def _prune_every(history: HistoryStore, interval_s: float) -> None:
    """Keep the history within its retention of event time."""
    while True:
        await asyncio.sleep(interval_s)
        if history.problem is not None:
            continue
        try:
            forgotten = await history.prune()
        except StoreUnavailable as exc:
            logger.error("%s", exc.message)
            continue
        if forgotten:
            logger.info("fraud history: %d payments past the retention forgotten", forgotten)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    services = Services.build(settings)
    table = EndpointTable(
        [
            *inference.ENDPOINTS,
            *fraud.ENDPOINTS,
            *alerts.ENDPOINTS,
            *open_inference_rest.ENDPOINTS,
        ]
    )

    grpc_server = GrpcServer(services)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        services.data_plane.start()
        await _open_history(services.history)
        history_tasks = [
            asyncio.create_task(_prune_every(services.history, PRUNE_EVERY_S), name="prune"),
            asyncio.create_task(_watch_history(services.history, WATCH_EVERY_S), name="watch"),
        ]
        # Load in the background so /healthz answers at once; /readyz tells when done.
        loading = asyncio.create_task(
            _load_then_poll(services.registry, settings.poll_interval_s), name="models"
        )
        try:
            if settings.grpc_port:
                await grpc_server.start()
            yield
        finally:
            # After a SIGTERM the drain has waited for the calls in flight already; otherwise
            # (SIGINT, a drain that ran out of time) they get the grace period.
            await grpc_server.stop(settings.shutdown_grace_s)
            for task in (loading, *history_tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await services.registry.close()
            services.data_plane.close()
            await services.history.close()

    app = FastAPI(
        title="deepserve",
        version=app_version,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.services = services
    # Innermost first: the dispatcher sits inside the drain, log and CORS middlewares.
    app.add_middleware(EndpointDispatcher, table=table, services=services)
    app.add_middleware(DrainMiddleware, drain=services.drain)
    app.add_middleware(RequestLogMiddleware, metrics=services.metrics)
    install_error_handlers(app)
    install_docs(app, table)
    if settings.console:
        install_console(app)
    keyed = [Depends(require_key)]
    probes = keyed if settings.auth_probes_and_metrics else []
    app.include_router(health.router, dependencies=probes)
    app.include_router(metrics.router, dependencies=probes)
    app.include_router(models.router, dependencies=keyed)
    app.include_router(admin.router, dependencies=[Depends(require_admin)])
    app.include_router(auth.router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
