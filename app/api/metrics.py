"""`GET /metrics` in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app.api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    registry = services.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
