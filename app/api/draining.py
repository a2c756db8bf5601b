"""Graceful shutdown: stop taking work, finish what was accepted, then let the server exit.

On the first SIGTERM the app starts draining: `/readyz` answers 503 (so the orchestrator
stops routing here), new inference requests get 503 with Retry-After, and requests already
accepted run to completion. When none is left, or the grace period is over, the server
exits. Probes and metrics keep answering throughout.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.responses import error_response

ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics")


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

    async def drain(self, grace_s: float) -> bool:
        """Start draining; True when every accepted request finished within `grace_s`."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        try:
            await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - time.monotonic()))
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
            response = error_response(
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
