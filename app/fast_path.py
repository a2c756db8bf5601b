"""The inference routes without FastAPI's routing and dependency solving.

For a small model, matching the route and solving its dependencies costs more than the
inference. This innermost middleware recognises the four inference POSTs by their path and
calls the same handlers the FastAPI routes call, with the same checks (API key, query
parameters, deadline header) and the same error shape; the middlewares around it (request
log and metrics, drain, CORS) apply as to any route. The FastAPI routes still declare these
endpoints, so that OpenAPI and the docs describe them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import Field, TypeAdapter, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app import errors
from app.auth import require_key
from app.deps import request_deadline
from app.http_errors import error_response, serving_error_response
from app.routes.inference import classify_images, score_transactions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteTemplate:
    """Stands in for the matched route in the ASGI scope: only its `path` is read."""

    path: str


_positive = TypeAdapter(Annotated[int, Field(ge=1)])
Handler = Callable[[Request, str, dict[str, int | None], float], Awaitable[Response]]


class InferenceFastPath:
    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        match = self._match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        template, model, handler = match
        scope["route"] = RouteTemplate(template)  # logs and metrics group by the template
        request = Request(scope, receive)
        try:
            await require_key(request)
            state = self.fastapi_app.state
            if model is None:
                model = (
                    state.settings.default_image_model
                    if handler is classify_images
                    else state.settings.default_fraud_model
                )
            options = _query_options(request, with_top_k=handler is classify_images)
            deadline = request_deadline(request.headers.get("x-request-timeout-ms"), state.settings)
            response = await handler(request, model, options, deadline)
        except errors.ServingError as exc:
            if isinstance(exc, errors.Overloaded):
                await self.fastapi_app.state.refusals.pace()
            response = serving_error_response(exc)
        except Exception:
            logger.exception("unhandled error on POST %s", scope["path"])
            response = error_response(500, "internal", "internal server error")
        await response(scope, receive, send)

    @staticmethod
    def _match(path: str) -> tuple[str, str | None, Handler] | None:
        if path == "/v1/classify":
            return path, None, classify_images
        if path == "/v1/fraud/score":
            return path, None, score_transactions
        parts = path.split("/")
        if len(parts) == 5 and parts[:3] == ["", "v1", "models"] and parts[3]:
            if parts[4] == "classify":
                return "/v1/models/{model}/classify", parts[3], classify_images
            if parts[4] == "score":
                return "/v1/models/{model}/score", parts[3], score_transactions
        return None


def _query_options(request: Request, with_top_k: bool) -> dict[str, int | None]:
    """`version` (and `top_k`), checked as the FastAPI routes declare them."""
    names = ("version", "top_k") if with_top_k else ("version",)
    if not request.scope["query_string"]:
        return dict.fromkeys(names)  # the usual case: nothing to parse
    options: dict[str, int | None] = {}
    problems: list[dict[str, Any]] = []
    for name in names:
        raw = request.query_params.get(name)
        if raw is None:
            options[name] = None
            continue
        try:
            options[name] = _positive.validate_python(raw, strict=False)
        except ValidationError as exc:
            problems += [{**p, "loc": ("query", name, *p["loc"])} for p in exc.errors()]
    if problems:
        raise errors.ValidationFailed.from_pydantic(problems)
    return options
