"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from app.api.deps import ServicesDep
from app.api.responses import json_response

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Every configured model is loaded and warmed (and what works less well)",
    responses={503: {"description": "Some models are not ready; they are listed."}},
)
async def readyz(services: ServicesDep) -> Response:
    problems = services.registry.not_ready()
    if services.drain.draining:
        problems = ["the server is shutting down", *problems]
    if problems:
        return json_response(
            {"status": "not ready", "not_ready": problems}, 503, {"Retry-After": "1"}
        )
    # Images and stateless scoring serve without the fraud history: said, not failed on.
    if services.history.problem is not None:
        return json_response({"status": "ready", "degraded": [services.history.problem]})
    return json_response({"status": "ready"})
