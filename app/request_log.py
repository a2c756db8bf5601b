"""One structured JSON log line per request, its id, and its request metrics.

The id comes from the client's `X-Request-ID` (when it is short and printable) or is made
here; either way it is echoed in the response. A pure ASGI middleware: no per-request
objects beyond what the log line needs.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import ServingMetrics

logger = logging.getLogger("deepserve.requests")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Generated ids: random per process (so replicas differ), then a counter. As unique as a
# uuid4 within a fleet, without a system call per request.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_details(scope: Scope) -> dict[str, Any]:
    """Per-request fields that handlers fill in for the log line (model, version, batch)."""
    return scope.setdefault("state", {}).setdefault("log", {})  # type: ignore[no-any-return]


class RequestLogMiddleware:
    """Logs each request and counts it in the metrics."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        details = request_details(scope)
        details["request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = _route(scope)
            self.metrics.observe_request(route, str(details.get("model", "")), status, seconds)
            if logger.isEnabledFor(logging.INFO):
                record = {
                    "request_id": request_id,
                    "method": scope["method"],
                    "route": route,
                    "status": status,
                    "latency_ms": round(seconds * 1000, 3),
                    **{k: v for k, v in details.items() if k != "request_id"},
                }
                logger.info(orjson.dumps(record).decode())


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _CLIENT_ID.match(candidate):
                return candidate
            break
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _route(scope: Scope) -> str:
    """The route's template (`/v1/models/{model}/score`), so logs group by endpoint."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else str(scope.get("path", ""))
