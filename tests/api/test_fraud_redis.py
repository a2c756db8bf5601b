"""The stateful fraud routes with the history in a real Redis: the same answers as with the
embedded store, and a Redis that is missing or lost answered with 503 `store_unavailable`
while images and `/score` go on, and service back by itself once Redis is."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import redis

from tests.api.test_fraud import payment
from tests.conftest import ClientFactory, encoded_image, transaction
from tests.redis_server import RedisServer
from tests.server import running_server


def test_redis_and_the_embedded_store_answer_alike(
    make_client: ClientFactory, redis_url: str
) -> None:
    embedded, shared = make_client(), make_client(fraud_store=redis_url)
    batches = [
        [payment(1, amount=40.0)],
        [payment(3, amount=90.0, timestamp="2018-09-13T02:00:00"), payment("2", amount=60.0)],
        [payment(4, terminal_id="4242", timestamp="2018-09-21T10:00:00")],
        [payment(1, amount=40.0)],  # a retry
    ]
    for batch in batches:
        answers = [
            c.post("/v1/fraud/transactions?include=features", json={"transactions": batch})
            for c in (embedded, shared)
        ]
        assert answers[0].status_code == answers[1].status_code == 200, answers[1].text
        assert answers[0].json() == answers[1].json()
    labels = {"labels": [{"transaction_id": 1, "fraud": True}, {"transaction_id": 9, "fraud": 0}]}
    assert embedded.post("/v1/fraud/labels", json=labels).json() == (
        shared.post("/v1/fraud/labels", json=labels).json()
    )
    for path in (
        "/v1/fraud/customers/17?limit=2",
        "/v1/fraud/terminals/4242",
        "/v1/fraud/terminals/x",
    ):
        views = [c.get(path) for c in (embedded, shared)]
        assert views[0].status_code == views[1].status_code
        assert views[0].json() == views[1].json()


def test_no_redis_at_start_is_503_until_it_comes(
    make_client: ClientFactory, own_redis: RedisServer
) -> None:
    client = make_client(fraud_store=own_redis.url)
    answer = client.post("/v1/fraud/transactions", json=payment(1))
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["retry-after"] == "1"
    labels = {"labels": [{"transaction_id": 1, "fraud": True}]}
    assert client.post("/v1/fraud/labels", json=labels).status_code == 503
    assert client.get("/v1/fraud/customers/17").status_code == 503
    # What needs no history goes on.
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200
    image = client.post("/v1/classify", files={"file": ("a.png", encoded_image("red"))})
    assert image.status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "does not answer" in ready.json()["degraded"][0]

    own_redis.start()
    back = time.monotonic()
    while client.post("/v1/fraud/transactions", json=payment(1)).status_code != 200:
        assert time.monotonic() - back < 2.0, "not back within 2 s of Redis"
        time.sleep(0.05)
    while "degraded" in client.get("/readyz").json():
        assert time.monotonic() - back < 2.5, "/readyz still says degraded"
        time.sleep(0.05)


def test_a_redis_lost_under_load_loses_no_answered_payment(own_redis: RedisServer) -> None:
    """Kill Redis while payments stream in, then start it again: every answer is a 200 or a
    503 (never a 500), every payment answered 200 is in Redis once, and the stream is
    served again within 2 s."""
    own_redis.start()
    statuses: dict[int, int] = {}
    stop = threading.Event()

    def send(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(1_000_000):
                if stop.is_set():
                    return
                stamp = f"2018-09-12T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                body = payment(i, customer_id=i % 13, timestamp=stamp)
                statuses[i] = http.post("/v1/fraud/transactions", json=body).status_code

    with running_server(fraud_store=own_redis.url, log_level="warning") as base:
        sender = threading.Thread(target=send, args=(base,))
        sender.start()
        try:
            wait_for(lambda: len(statuses) >= 200, "200 answers before the kill", base)
            own_redis.stop(kill=True)
            wait_for(lambda: 503 in statuses.values(), "a 503 while Redis is gone", base)
            own_redis.start()
            back, before = time.monotonic(), len(statuses)
            wait_for(lambda: _last(statuses) == 200 and len(statuses) > before, "service", base)
            assert time.monotonic() - back < 2.0
        finally:
            stop.set()
            sender.join()
    assert set(statuses.values()) == {200, 503}
    answered = {i for i, status in statuses.items() if status == 200}
    client = redis.Redis.from_url(own_redis.url)
    pipe = client.pipeline(transaction=False)
    for i in sorted(answered):
        pipe.exists(f"deepserve:fraud:tx:{i}")
    kept = pipe.execute()
    client.close()
    assert all(kept), f"{kept.count(0)} of {len(answered)} answered payments are not in Redis"


def _last(statuses: dict[int, int]) -> int:
    return statuses[max(statuses)] if statuses else 0


def wait_for(condition: Any, what: str, base: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"no {what}:\n{base.output()[-3000:]}"
        time.sleep(0.01)
