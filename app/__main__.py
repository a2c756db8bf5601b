"""`python -m app`: serve the model repository with uvicorn, configured by DEEPSERVE_*."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

from app.api.draining import Drain
from app.api.http_protocol import CoalescingHttpProtocol
from app.api.services import services_of
from app.main import create_app
from app.settings import Settings

logger = logging.getLogger("deepserve")


def main() -> None:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "\n".join(
            f"  DEEPSERVE_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        sys.exit(f"invalid settings:\n{problems}")
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Request lines are JSON already: print them bare, one per line.
    requests = logging.getLogger("deepserve.requests")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    requests.addHandler(handler)
    requests.propagate = False
    app = create_app(settings)
    _tune_garbage_collector(settings.gc_gen0_threshold)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=CoalescingHttpProtocol,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_s)),
    )
    DrainingServer(config, services_of(app).drain, settings.shutdown_grace_s).run()


def _tune_garbage_collector(gen0_threshold: int) -> None:
    # What exists now (modules, schemas, the app) lives as long as the process: freezing it
    # keeps full collections from walking it again and again.
    gc.collect()
    gc.freeze()
    if gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0_threshold, gen1, gen2)


class DrainingServer(uvicorn.Server):
    """uvicorn, but the first SIGTERM drains (see app.api.draining) before the server stops."""

    def __init__(self, config: uvicorn.Config, drain: Drain, grace_s: float) -> None:
        super().__init__(config)
        self._drain = drain
        self._grace_s = grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self._loop is not None and self._draining is None:
            self._loop.call_soon_threadsafe(self._start_draining)
            return
        super().handle_exit(sig, frame)  # SIGINT, or a second SIGTERM: stop now

    def _start_draining(self) -> None:
        self._draining = asyncio.get_running_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        logger.info("SIGTERM: draining for up to %.0fs", self._grace_s)
        finished = await self._drain.drain(self._grace_s)
        if not finished:
            logger.warning("grace period over with %d requests in flight", self._drain.in_flight)
        self.should_exit = True


if __name__ == "__main__":
    main()
