"""The data plane over real HTTP: hang-ups, and hot swaps that name the version that answered."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests import model_factory
from tests.conftest import transaction
from tests.server import running_server

pytestmark = pytest.mark.anyio


def _metric(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample; 0 when it is absent."""
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == name and all(f'{k}="{v}"' in sample for k, v in labels.items()):
            return float(value)
    return 0.0


async def test_requests_whose_clients_hang_up_leave_the_queue(tmp_path: Path) -> None:
    # One row per batch. How long a batch takes on this machine decides how many requests
    # make a queue of about 6 s: the first second of it is not watched for hang-ups (those
    # answers are near), the rest is, and every client hangs up at once after 0.3 s.
    folder = model_factory.slow_fraud_model(tmp_path, iterations=2000, max_batch_size=1)
    batch_s = model_factory.seconds_per_batch(folder)
    sent = min(400, max(30, round(6.0 / batch_s)))
    with running_server(model_repository=str(tmp_path), intra_op_threads="1") as base:
        port = int(base.rsplit(":", 1)[1])
        body = json.dumps(transaction()).encode()
        head = (
            "POST /v1/models/slow-fraud/score HTTP/1.1\r\nHost: test\r\n"
            # A long deadline: a busy machine slows the model, and none may be refused.
            "X-Request-Timeout-Ms: 60000\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
        batches_before = _metric(metrics, "deepserve_inference_seconds_count", model="slow-fraud")
        writers = []
        for _ in range(sent):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + body)
            writers.append(writer)
        await asyncio.sleep(0.3)
        for writer in writers:  # every client gives up before most answers are ready
            writer.close()
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            route = "/v1/models/{model}/score"
            for _ in range(300):  # until every request has an outcome
                metrics = (await client.get("/metrics")).text
                counted = sum(
                    _metric(metrics, "deepserve_requests_total", route=route, status=status)
                    for status in ("200", "499", "503", "504")
                )
                if counted == sent:
                    break
                await asyncio.sleep(0.1)
            abandoned = _metric(metrics, "deepserve_requests_total", route=route, status="499")
            batches = (
                _metric(metrics, "deepserve_inference_seconds_count", model="slow-fraud")
                - batches_before
            )
            after = await client.post("/v1/models/slow-fraud/score", json=transaction())
    assert counted == sent, metrics
    # Without the watch every request would have run, one per batch. With it, only the
    # unwatched first second runs, about a sixth of the queue at the calibrated speed: even
    # a model twice as slow or twice as fast as calibrated leaves two thirds abandoned.
    assert abandoned >= sent * 2 / 3 - 2, (sent, batch_s, abandoned, batches)
    assert batches <= sent / 3 + 2, (sent, batch_s, abandoned, batches)
    assert after.status_code == 200
