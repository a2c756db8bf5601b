"""Behaviour that is about HTTP, against a real uvicorn server process."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from tests import model_factory
from tests.conftest import transaction
from tests.server import running_server

pytestmark = pytest.mark.anyio


async def test_a_full_queue_answers_503_with_retry_after_and_loses_nothing(tmp_path: Path) -> None:
    # Rows wait 1 s for company, and only 4 may wait: the rest must be refused at once.
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=1000)
    with running_server(
        model_repository=str(tmp_path), max_queue_items="4", default_fraud_model="tiny-fraud"
    ) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def one(i: int) -> tuple[httpx.Response, float]:
                started = time.monotonic()
                response = await client.post("/v1/fraud/score", json=transaction(transaction_id=i))
                return response, time.monotonic() - started

            outcomes = await asyncio.gather(*(one(i) for i in range(12)))
    statuses = sorted(r.status_code for r, _ in outcomes)
    assert statuses.count(200) >= 4
    assert set(statuses) == {200, 503}
    for response, elapsed in outcomes:
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
            assert elapsed < 0.6  # refused without waiting for the batch (1 s)
        else:
            assert len(response.json()["results"]) == 1


async def _fill_queue(
    client: httpx.AsyncClient, path: str, count: int
) -> list[asyncio.Task[httpx.Response]]:
    """Send `count` transactions that will wait in the queue; their answers, to await later."""
    queued = [asyncio.create_task(client.post(path, json=transaction())) for _ in range(count)]
    await asyncio.sleep(0.3)  # long enough for all of them to be queued
    return queued


async def test_a_request_the_queue_cannot_take_is_refused_before_its_body_is_read(
    tmp_path: Path,
) -> None:
    # Four rows wait a second for company and fill the queue; the fifth request's body is
    # not even JSON, and it gets 503, not 400: it was refused before its body was parsed.
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=1000)
    with running_server(
        model_repository=str(tmp_path), max_queue_items="4", default_fraud_model="tiny-fraud"
    ) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            queued = await _fill_queue(client, "/v1/fraud/score", 4)
            refused = await client.post(
                "/v1/fraud/score",
                content=b"{not json",
                headers={"content-type": "application/json"},
            )
            answered = await asyncio.gather(*queued)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "overloaded"
    assert [r.status_code for r in answered] == [200] * 4


async def test_refusals_beyond_the_prompt_budget_are_held_for_the_pause(tmp_path: Path) -> None:
    # The queue is full (4 rows wait a second for company), and only 2 refusals a second
    # are prompt: of 10 more requests at once, 2 are refused at once and 8 after 0.4 s.
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=1000)
    with running_server(
        model_repository=str(tmp_path),
        max_queue_items="4",
        prompt_refusals_per_s="2",
        refusal_pause_ms="400",
    ) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            queued = await _fill_queue(client, "/v1/models/tiny-fraud/score", 4)

            async def refused() -> float:
                started = time.monotonic()
                response = await client.post("/v1/models/tiny-fraud/score", json=transaction())
                assert response.status_code == 503
                assert response.headers["retry-after"] == "1"
                return time.monotonic() - started

            latencies = sorted(await asyncio.gather(*(refused() for _ in range(10))))
            answered = await asyncio.gather(*queued)
    assert [r.status_code for r in answered] == [200] * 4
    assert latencies[1] < 0.3, latencies
    assert all(0.4 <= latency < 0.9 for latency in latencies[2:]), latencies


async def test_a_request_queued_past_its_deadline_gets_504(tmp_path: Path) -> None:
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=2000)
    with running_server(model_repository=str(tmp_path)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            started = time.monotonic()
            response = await client.post(
                "/v1/models/tiny-fraud/score",
                json=transaction(),
                headers={"X-Request-Timeout-Ms": "100"},
            )
            elapsed = time.monotonic() - started
            assert response.status_code == 504
            assert response.json()["error"]["code"] == "deadline_exceeded"
            assert elapsed < 1.5
            bad = await client.post(
                "/v1/models/tiny-fraud/score",
                json=transaction(),
                headers={"X-Request-Timeout-Ms": "soon"},
            )
            assert bad.status_code == 422
            assert "x-request-timeout-ms" in bad.json()["error"]["message"]


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


async def test_concurrent_clients_each_get_their_own_answer(tmp_path: Path) -> None:
    model_factory.fraud_model(tmp_path, max_batch_size=16, max_queue_delay_ms=5)
    amounts = [float(a) for a in range(0, 400, 5)]
    with running_server(model_repository=str(tmp_path)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            responses = await asyncio.gather(
                *(
                    client.post(
                        "/v1/models/tiny-fraud/score",
                        json=transaction(transaction_id=f"t{a}", amount=a),
                    )
                    for a in amounts
                )
            )
    for amount, response in zip(amounts, responses, strict=True):
        (result,) = response.json()["results"]
        assert result["transaction_id"] == f"t{amount}"
        assert result["fraud_probability"] == pytest.approx(
            model_factory.fraud_probability(amount), rel=1e-5
        )


def test_invalid_settings_stop_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failure, running_server(port="not-a-port"):
        pass
    assert "DEEPSERVE_PORT" in str(failure.value)
