"""SIGTERM: the server drains (readiness off, new work refused) and loses no accepted request."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest

from tests import model_factory
from tests.conftest import transaction
from tests.load import post_request
from tests.server import running_server, wait_until_queued

pytestmark = pytest.mark.anyio


async def test_sigterm_drains_without_losing_accepted_requests(tmp_path: Path) -> None:
    # Every batch waits 2 s for company, so requests are queued when SIGTERM arrives.
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=2000)
    with running_server(model_repository=str(tmp_path), shutdown_grace_s="10") as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            accepted = [
                asyncio.ensure_future(
                    client.post("/v1/models/tiny-fraud/score", json=transaction(transaction_id=i))
                )
                for i in range(10)
            ]
            await wait_until_queued(client, "tiny-fraud", 10)
            base.process.send_signal(signal.SIGTERM)
            for _ in range(100):  # until the signal has reached the server
                ready = await client.get("/readyz")
                if ready.status_code == 503:
                    break
                await asyncio.sleep(0.01)
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


# Impatient clients: a new connection for every request, and a 503 does not slow them down.
CLIENTS = 64
MAX_REQUESTS_PER_CLIENT = 5_000  # a bound on each loop; a client normally stops far sooner
CONNECT_TIMEOUT_S = 3.0  # after SIGTERM the server's kernel drops new handshakes: give up then
ANSWER_TIMEOUT_S = 30.0  # far beyond the grace period: no answer by then is a lost request
GRACE_S = 10.0
SCORE = "/v1/models/tiny-fraud/score"


@dataclass
class Tally:
    """What the impatient clients saw; `lost` is what must stay empty."""

    statuses: Counter[int] = field(default_factory=Counter)
    closing_503s: int = 0  # 503s with Retry-After and `Connection: close`
    answered_before_sigterm: int = 0
    connect_failures_before_sigterm: list[str] = field(default_factory=list)
    connect_failures_after_sigterm: int = 0
    lost: list[str] = field(default_factory=list)  # connected, sent, and got no full answer


async def test_impatient_clients_lose_no_request_across_sigterm(tmp_path: Path) -> None:
    model_factory.fraud_model(tmp_path, max_batch_size=64, max_queue_delay_ms=2)
    settings = {"model_repository": str(tmp_path), "shutdown_grace_s": str(GRACE_S)}
    with running_server(log_level="warning", **settings) as base:
        body = orjson.dumps(transaction(transaction_id="tx-impatient"))
        request = post_request("127.0.0.1", base.port, SCORE, body, "application/json")
        # One request is held across the signal: its head is in before SIGTERM, its body only
        # once the drain has answered 503s. Until then it keeps the drain going, and the doors
        # open, so that the clients surely meet a draining server before the doors close.
        held_reader, held_writer = await asyncio.open_connection("127.0.0.1", base.port)
        head, held_body = request.split(b"\r\n\r\n", 1)
        held_writer.write(head + b"\r\nX-Request-Timeout-Ms: 60000\r\n\r\n")
        tally = Tally()
        sigterm = asyncio.Event()
        deadline = time.monotonic() + 60 + GRACE_S
        clients = [
            asyncio.ensure_future(_impatient_client(base.port, request, tally, sigterm, deadline))
            for _ in range(CLIENTS)
        ]
        # A second or more of load, with answers flowing, before the signal. Requests sent
        # after the held head have been answered: the server has taken that head in too.
        started = time.monotonic()
        while time.monotonic() - started < 1.0 or tally.answered_before_sigterm < 4 * CLIENTS:
            assert time.monotonic() < started + 30, f"no load flowing: {tally}"
            assert not tally.lost and not tally.connect_failures_before_sigterm, tally
            await asyncio.sleep(0.05)
        sigterm.set()
        base.process.send_signal(signal.SIGTERM)
        while tally.statuses[503] < CLIENTS and time.monotonic() < started + 60:
            await asyncio.sleep(0.01)
        held_writer.write(held_body)
        held = await asyncio.wait_for(_read_answer(held_reader), ANSWER_TIMEOUT_S)
        held_writer.close()
        await asyncio.gather(*clients)
        exit_code = await asyncio.to_thread(base.process.wait, 30)

    report = (
        f"statuses {dict(tally.statuses)}, {tally.answered_before_sigterm} before SIGTERM, "
        f"{tally.connect_failures_after_sigterm} connects refused or timed out after it, "
        f"{len(tally.lost)} lost: {tally.lost[:5]}"
    )
    print(report)
    # Every connection the server accepted got a full answer: none closed or reset unanswered.
    assert tally.lost == [], report
    assert tally.connect_failures_before_sigterm == [], report
    assert held[0] == 200, report  # accepted before SIGTERM: served in full
    assert exit_code == 0, report
    assert set(tally.statuses) == {200, 503}, report
    # Those that came during the drain were told when to retry, and that this connection is done.
    assert tally.closing_503s == tally.statuses[503] >= CLIENTS, report


async def _impatient_client(
    port: int, request: bytes, tally: Tally, sigterm: asyncio.Event, deadline: float
) -> None:
    """New connection, one request, read the whole answer, close; again, whatever the answer.

    Stops when a connect fails after SIGTERM (the server no longer takes connections): that
    is allowed. A connection that was made and then ends without a full answer is a loss.
    """
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.monotonic() > deadline:
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            if sigterm.is_set():
                tally.connect_failures_after_sigterm += 1
            else:
                tally.connect_failures_before_sigterm.append(repr(exc))
            return
        try:
            writer.write(request)
            status, headers = await asyncio.wait_for(_read_answer(reader), ANSWER_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
            tally.lost.append(f"{type(exc).__name__}: {exc}")
            continue
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        tally.statuses[status] += 1
        if not sigterm.is_set():
            tally.answered_before_sigterm += 1
        closing = headers.get("connection", "").lower() == "close" and "retry-after" in headers
        if status == 503 and closing:
            tally.closing_503s += 1


async def _read_answer(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Status and headers of one HTTP/1.1 answer, after reading its whole body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers["content-length"]))
    return status, headers
