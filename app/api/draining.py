"""Graceful shutdown: stop taking work, finish what was accepted, then let the server exit.

On the first SIGTERM the app starts draining: `/readyz` answers 503 (so the orchestrator
stops routing here), new inference requests get 503 with Retry-After and `Connection: close`,
and requests already accepted run to completion. When none is left, or the grace period is
nearly over, the server stops taking connections and answers those it took before it exits
(app.api.server). Probes and metrics keep answering throughout.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.responses import error_format

ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


class Drain:
    """Counts requests in flight and knows whether the app is draining."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    def start(self) -> None:
        """Refuse new requests from now on (DrainMiddleware answers them 503)."""
        self.draining = True

    async def wait(self, timeout_s: float) -> bool:
        """True when every accepted request has finished within `timeout_s` (0 if negative)."""
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, timeout_s))
        except TimeoutError:
            return False
        return True


class DrainMiddleware:
    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ALWAYS_OPEN:
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            response = error_format(scope["path"]).response(
                503,
                "shutting_down",
                "the server is shutting down",
                {"Retry-After": "1", "Connection": "close"},
            )
            await response(scope, receive, send)
            return
        self.drain.enter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.leave()
