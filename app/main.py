"""The application factory: `create_app(settings)` builds a FastAPI app with its lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.auth import parse_keys, require_admin, require_key
from app.docs import install_docs
from app.draining import Drain, DrainMiddleware
from app.fast_path import InferenceFastPath
from app.http_errors import install_error_handlers
from app.inference import InferenceService
from app.metrics import ServingMetrics
from app.refusals import RefusalPacer
from app.registry import ModelRegistry
from app.request_log import RequestLogMiddleware
from app.routes import admin, health, inference, metrics_route, models
from app.settings import Settings

logger = logging.getLogger(__name__)

DESCRIPTION = """Image classification and card-fraud scoring on ONNX Runtime, with
server-side dynamic batching. Errors share one shape: `{"error": {"code", "message"}}`."""


async def _load_then_poll(registry: ModelRegistry, settings: Settings) -> None:
    """Load the repository, then pick up new and removed versions every poll interval."""
    await registry.load_all()
    while settings.poll_interval_s > 0:
        await asyncio.sleep(settings.poll_interval_s)
        try:
            await registry.sync()
        except Exception:  # a bad scan must not end polling for good
            logger.exception("model repository scan failed")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = ModelRegistry(settings, metrics)
        metrics.watch(registry.snapshot)
        service = InferenceService(registry, settings)
        app.state.registry, app.state.inference = registry, service
        # Load in the background so /healthz answers at once; /readyz tells when done.
        loading = asyncio.create_task(_load_then_poll(registry, settings), name="models")
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await registry.close()
            service.close()

    app = FastAPI(
        title="deepserve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=None
        if settings.opentelemetry
        else {"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    metrics = ServingMetrics()
    app.state.metrics = metrics
    app.state.drain = Drain()
    app.state.refusals = RefusalPacer(
        settings.prompt_refusals_per_s, settings.refusal_pause_ms / 1000
    )
    # Innermost first: the fast path sits inside the drain, log and CORS middlewares.
    app.add_middleware(InferenceFastPath, fastapi_app=app)
    app.add_middleware(DrainMiddleware, drain=app.state.drain)
    app.add_middleware(RequestLogMiddleware, metrics=metrics)
    install_error_handlers(app)
    install_docs(app)
    app.state.api_keys = parse_keys([key.get_secret_value() for key in settings.api_keys])
    keyed = [Depends(require_key)]
    probes = keyed if settings.auth_probes_and_metrics else []
    app.include_router(health.router, dependencies=probes)
    app.include_router(metrics_route.router, dependencies=probes)
    app.include_router(models.router, dependencies=keyed)
    app.include_router(admin.router, dependencies=[Depends(require_admin)])
    app.include_router(inference.router, dependencies=keyed)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    return app
