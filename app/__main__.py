"""`python -m app`: serve the model repository with uvicorn, configured by DEEPSERVE_*."""

from __future__ import annotations

import logging
import sys

import uvicorn
from pydantic import ValidationError

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
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":
    main()
