"""Annotated dependencies shared by the routers, and the request deadline.

All are `async def`: FastAPI runs plain `def` dependencies in its thread pool, a hop that
costs more than a small model's inference.
"""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import Depends, Request

from app.api.services import Services, services_of
from app.errors import ValidationFailed
from app.serving.registry import ModelRegistry
from app.settings import Settings

DEADLINE_HEADER = "x-request-timeout-ms"


async def _services(request: Request) -> Services:
    return services_of(request.app)


async def _registry(request: Request) -> ModelRegistry:
    return services_of(request.app).registry


async def _settings(request: Request) -> Settings:
    return services_of(request.app).settings


def request_deadline(timeout_header: str | None, settings: Settings) -> float:
    """The request's deadline on the monotonic clock, from its header or the default."""
    timeout_ms = settings.request_timeout_ms
    if timeout_header is not None:
        try:
            timeout_ms = float(timeout_header)
        except ValueError:
            timeout_ms = -1.0
        if not 0 < timeout_ms <= settings.max_request_timeout_ms:
            raise ValidationFailed(
                f"header.{DEADLINE_HEADER}: must be a number of milliseconds in "
                f"(0, {settings.max_request_timeout_ms:g}]",
                [{"field": f"header.{DEADLINE_HEADER}", "message": "out of range"}],
            )
    return time.monotonic() + timeout_ms / 1000.0


ServicesDep = Annotated[Services, Depends(_services)]
RegistryDep = Annotated[ModelRegistry, Depends(_registry)]
SettingsDep = Annotated[Settings, Depends(_settings)]
