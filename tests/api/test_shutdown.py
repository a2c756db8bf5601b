"""SIGTERM: the server drains (readiness off, new work refused) and loses no accepted request."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests import model_factory
from tests.conftest import transaction
from tests.server import running_server

pytestmark = pytest.mark.anyio


async def test_sigterm_drains_without_losing_accepted_requests(tmp_path: Path) -> None:
    # Every batch waits 400 ms for company, so requests are queued when SIGTERM arrives.
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=400)
    with running_server(model_repository=str(tmp_path), shutdown_grace_s="10") as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            accepted = [
                asyncio.ensure_future(
                    client.post("/v1/models/tiny-fraud/score", json=transaction(transaction_id=i))
                )
                for i in range(10)
            ]
            await asyncio.sleep(0.15)
            base.process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.1)
            ready = await client.get("/readyz")
            refused = await client.post("/v1/models/tiny-fraud/score", json=transaction())
            responses = await asyncio.gather(*accepted)
        assert [r.status_code for r in responses] == [200] * 10
        assert [r.json()["results"][0]["transaction_id"] for r in responses] == list(range(10))
        assert ready.status_code == 503
        assert "shutting down" in ready.json()["not_ready"][0]
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        started = time.monotonic()
        assert base.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
