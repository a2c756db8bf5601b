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
    # One row per batch of about 20 ms on this machine (the model's cost is calibrated),
    # and requests for about 6 s of queue: the first second of it is not watched for
    # hang-ups (those answers are near), the rest is; every client hangs up after 0.3 s.
    _, batch_s = model_factory.calibrated_slow_fraud_model(tmp_path, 0.020, max_batch_size=1)
    sent = min(800, max(60, round(6.0 / batch_s)))
    with running_server(model_repository=str(tmp_path), intra_op_threads="1") as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            metrics = (await client.get("/metrics")).text
        batches_before = _metric(metrics, "deepserve_inference_seconds_count", model="slow-fraud")
        body = json.dumps(transaction())
        await _send_and_hang_up(base, "/v1/models/slow-fraud/score", [body] * sent, 0.3)
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
    # unwatched first second runs, a sixth of the queue at the calibrated speed: even a
    # model three times slower or faster under load than calibrated leaves half abandoned.
    assert abandoned >= sent / 2, (sent, batch_s, abandoned, batches)
    assert batches <= sent / 2, (sent, batch_s, abandoned, batches)
    assert after.status_code == 200


async def test_payments_whose_clients_hang_up_leave_no_trace(tmp_path: Path) -> None:
    # As above, on the stateful route: a payment is recorded and scored, or neither, so
    # the card's history holds exactly the payments of the requests answered.
    _, batch_s = model_factory.calibrated_slow_fraud_model(tmp_path, 0.020, max_batch_size=1)
    sent = min(800, max(60, round(6.0 / batch_s)))
    bodies = [
        json.dumps(
            {
                "transaction_id": i,
                "customer_id": 17,
                "terminal_id": 4242,
                "amount": 50.0,
                "timestamp": f"2018-09-12T{i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}",
            }
        )
        for i in range(sent)
    ]
    with running_server(model_repository=str(tmp_path), intra_op_threads="1") as base:
        await _send_and_hang_up(base, "/v1/models/slow-fraud/transactions", bodies, 0.3)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            route = "/v1/models/{model}/transactions"
            for _ in range(300):  # until every request has an outcome
                metrics = (await client.get("/metrics")).text
                outcomes = {
                    status: _metric(metrics, "deepserve_requests_total", route=route, status=status)
                    for status in ("200", "499", "503", "504")
                }
                if sum(outcomes.values()) == sent:
                    break
                await asyncio.sleep(0.1)
            card = await client.get("/v1/fraud/customers/17", params={"limit": 1000})
    assert sum(outcomes.values()) == sent, metrics
    assert outcomes["499"] >= sent / 2, outcomes  # most left before their answer
    assert card.status_code == 200
    assert len(card.json()["transactions"]) == outcomes["200"], outcomes


async def _send_and_hang_up(base: str, path: str, bodies: list[str], after_s: float) -> None:
    """One connection per body, each request sent whole; all closed after `after_s`."""
    port = int(base.rsplit(":", 1)[1])
    writers = []
    for body in bodies:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: test\r\n"
            # A long deadline: a busy machine slows the model, and none may be refused.
            "X-Request-Timeout-Ms: 60000\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write((head + body).encode())
        writers.append(writer)
    await asyncio.sleep(after_s)
    for writer in writers:  # every client gives up before most answers are ready
        writer.close()


async def test_a_hot_swap_under_load_is_logged_and_counted_as_the_version_that_answered(
    tmp_path: Path,
) -> None:
    # 16 clients keep scoring while version 2 replaces version 1 (one version kept). One
    # more request resolves version 1, then sends its body only after version 1 has been
    # unloaded: version 2 must answer it, and its log line and metrics must say so.
    model_factory.fraud_model(tmp_path, max_queue_delay_ms=2)
    with running_server(
        model_repository=str(tmp_path), poll_interval_s="0.05", keep_versions="1"
    ) as base:
        answered: dict[str, int] = {}  # request id -> version in the answer
        statuses: list[int] = []
        body = json.dumps(transaction()).encode()
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:

            async def hammer(worker: int, stop: asyncio.Event) -> None:
                for n in range(100_000):
                    if stop.is_set():
                        return
                    request_id = f"w{worker}-{n}"
                    response = await client.post(
                        "/v1/models/tiny-fraud/score",
                        content=body,
                        headers={"content-type": "application/json", "x-request-id": request_id},
                    )
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        answered[request_id] = response.json()["version"]

            stop = asyncio.Event()
            workers = [asyncio.ensure_future(hammer(w, stop)) for w in range(16)]
            await asyncio.sleep(0.3)
            reader, writer = await asyncio.open_connection("127.0.0.1", base.port)
            writer.write(
                b"POST /v1/models/tiny-fraud/score HTTP/1.1\r\nHost: test\r\n"
                b"X-Request-ID: slow-body\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the request has resolved version 1 by now
            model_factory.fraud_model(tmp_path, version=2)
            for _ in range(600):  # until version 1 is gone
                models = (await client.get("/v1/models/tiny-fraud")).json()
                if [v["version"] for v in models["versions"]] == [2]:
                    break
                await asyncio.sleep(0.05)
            writer.write(body[10:])
            await writer.drain()
            head, _, rest = (await asyncio.wait_for(reader.read(65536), 30)).partition(b"\r\n\r\n")
            writer.close()
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*workers)
            metrics = (await client.get("/metrics")).text
        log = base.output()
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(rest)["version"] == 2
    answered["slow-body"] = 2
    assert set(statuses) == {200}
    assert {1, 2} <= set(answered.values())
    lines = {
        record["request_id"]: record
        for record in map(json.loads, (line for line in log.splitlines() if line.startswith("{")))
        if record.get("route") == "/v1/models/{model}/score"
    }
    assert {rid: lines[rid]["version"] for rid in answered} == answered
    route = "/v1/models/{model}/score"
    for version in (1, 2):
        counted = _metric(
            metrics, "deepserve_requests_total", route=route, version=str(version), status="200"
        )
        assert counted == list(answered.values()).count(version), (version, counted)
