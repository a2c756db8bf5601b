"""Annotated dependencies shared by the routers.

All are `async def`: FastAPI runs plain `def` dependencies in its thread pool, a hop that
costs more than a small model's inference.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import ValidationFailed
from app.inference import InferenceService
from app.registry import ModelRegistry
from app.settings import Settings


async def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def _registry(request: Request) -> ModelRegistry:
    return request.app.state.registry  # type: ignore[no-any-return]


async def _inference(request: Request) -> InferenceService:
    return request.app.state.inference  # type: ignore[no-any-return]


async def _deadline(
    settings: Annotated[Settings, Depends(_settings)],
    x_request_timeout_ms: Annotated[
        str | None,
        Header(
            description="This request's deadline in milliseconds, from its arrival; "
            "a request still queued at its deadline gets 504."
        ),
    ] = None,
) -> float:
    return request_deadline(x_request_timeout_ms, settings)


def request_deadline(x_request_timeout_ms: str | None, settings: Settings) -> float:
    """The request's deadline on the monotonic clock, from its header or the default."""
    timeout_ms = settings.request_timeout_ms
    if x_request_timeout_ms is not None:
        try:
            timeout_ms = float(x_request_timeout_ms)
        except ValueError:
            timeout_ms = -1.0
        if not 0 < timeout_ms <= settings.max_request_timeout_ms:
            raise ValidationFailed(
                f"header.x-request-timeout-ms: must be a number of milliseconds in "
                f"(0, {settings.max_request_timeout_ms:g}]",
                [{"field": "header.x-request-timeout-ms", "message": "out of range"}],
            )
    return time.monotonic() + timeout_ms / 1000.0


SettingsDep = Annotated[Settings, Depends(_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
InferenceDep = Annotated[InferenceService, Depends(_inference)]
Deadline = Annotated[float, Depends(_deadline)]
