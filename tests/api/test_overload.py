"""Overload and deadlines over real HTTP: refusals, pacing, 504s, and no answer mixed up."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests import model_factory
from tests.conftest import transaction
from tests.server import running_server, wait_until_queued

pytestmark = pytest.mark.anyio


async def _fill_queue(
    client: httpx.AsyncClient, path: str, count: int
) -> list[asyncio.Task[httpx.Response]]:
    """Send `count` transactions that will wait in tiny-fraud's queue; their answers, to
    await later. Returns as soon as the server's gauge shows them all queued, however long
    they took to get there on this machine."""
    queued = [asyncio.create_task(client.post(path, json=transaction())) for _ in range(count)]
    await wait_until_queued(client, "tiny-fraud", count)
    return queued


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
