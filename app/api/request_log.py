"""One structured JSON log line per request, its id, and its request metrics (for gRPC
calls too: `record_request`).

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

from app.serving.data_plane import RequestReport
from app.serving.metrics import ServingMetrics

logger = logging.getLogger("deepserve.requests")

_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Generated ids: random per process (so replicas differ), then a counter. As unique as a
# uuid4 within a fleet, without a system call per request.
_ID_PREFIX = secrets.token_hex(8)
_ID_COUNTER = itertools.count(1)


def request_report(scope: Scope) -> RequestReport:
    """What the data plane reports of this request (model, version, items), for its log
    line and metrics."""
    state = scope.setdefault("state", {})
    report = state.get("report")
    if not isinstance(report, RequestReport):
        report = state["report"] = RequestReport()
    return report


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
        report = request_report(scope)
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
            record_request(
                self.metrics, request_id, scope["method"], _route(scope), status, seconds, report
            )


def record_request(
    metrics: ServingMetrics,
    request_id: str,
    method: str,
    route: str,
    status: int,
    seconds: float,
    report: RequestReport,
) -> None:
    """Count a request in the metrics and write its log line (HTTP and gRPC alike)."""
    version = "" if report.version is None else str(report.version)
    metrics.observe_request(route, report.model or "", version, status, seconds)
    if logger.isEnabledFor(logging.INFO):
        record: dict[str, Any] = {
            "request_id": request_id,
            "method": method,
            "route": route,
            "status": status,
            "latency_ms": round(seconds * 1000, 3),
        }
        if report.model is not None:
            record.update(model=report.model, version=report.version)
        if report.items is not None:
            record["items"] = report.items
        logger.info(orjson.dumps(record).decode())


def request_id_from(candidate: str | None) -> str:
    """The client's id where it is short and printable; else a new one."""
    if candidate is not None and _CLIENT_ID.match(candidate):
        return candidate
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            return request_id_from(value.decode("latin-1"))
    return request_id_from(None)


def _route(scope: Scope) -> str:
    """The route's template (`/v1/models/{model}/score`), so logs group by endpoint."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else str(scope.get("path", ""))
