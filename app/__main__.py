"""`python -m app`: serve the model repository with uvicorn, configured by DEEPSERVE_*."""

from __future__ import annotations

import gc
import logging
import sys

import uvicorn
from pydantic import ValidationError

from app.api.http_protocol import CoalescingHttpProtocol
from app.api.server import DrainingServer
from app.api.services import services_of
from app.main import create_app
from app.settings import Settings


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


if __name__ == "__main__":
    main()
