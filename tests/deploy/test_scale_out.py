"""Scale-out as deployed: two replicas sharing one Redis behind a real nginx, all on
loopback. One card's payments sent alternately through the balancer get exactly the
features one replica alone gives them."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.api.test_fraud import payment
from tests.conftest import ClientFactory
from tests.load_balancer import nginx_in_front
from tests.server import running_server


def test_two_replicas_behind_nginx_share_one_history(
    redis_url: str, make_client: ClientFactory
) -> None:
    payments = [
        payment(
            i,
            amount=10.0 + i,
            terminal_id=4242 if i % 3 else 4243,
            timestamp=f"2018-09-{1 + i // 4:02d}T{(i * 5) % 24:02d}:30:00",
        )
        for i in range(24)
    ]
    labels = {"labels": [{"transaction_id": i, "fraud": i % 4 == 0} for i in range(12)]}

    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(running_server(fraud_store=redis_url, grpc_port="0"))
            for _ in range(2)
        ]
        balancer = stack.enter_context(nginx_in_front([r.port for r in replicas]))
        with httpx.Client(base_url=balancer, timeout=30) as http:
            shared = [_send(http, payments[:12])]
            assert http.post("/v1/fraud/labels", json=labels).status_code == 200
            shared.append(_send(http, payments[12:]))
            card = http.get("/v1/fraud/customers/17?limit=30").json()
        served = [_requests(replica) for replica in replicas]

    assert min(served) >= 10, served  # both replicas answered, in turn

    alone = make_client()
    expected = [_send(alone, payments[:12])]
    alone.post("/v1/fraud/labels", json=labels)
    expected.append(_send(alone, payments[12:]))
    assert shared == expected
    assert card == alone.get("/v1/fraud/customers/17?limit=30").json()
    assert len(card["transactions"]) == 24


def _send(http: Any, payments: list[dict[str, Any]]) -> list[dict[str, float]]:
    """One payment per request, in order: each one's features."""
    features = []
    for body in payments:
        answer = http.post("/v1/fraud/transactions?include=features", json=body)
        assert answer.status_code == 200, answer.text
        features.append(answer.json()["results"][0]["features"])
    return features


def _requests(base: str) -> float:
    metrics = httpx.get(f"{base}/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "deepserve_requests_total" and "transactions" in str(sample.labels)
    )
