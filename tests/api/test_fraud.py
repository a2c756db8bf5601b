"""The stateful fraud routes on the real app and a real history file: raw payments recorded
and scored, retries, conflicts, labels, and the card and terminal views."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import model_factory
from tests.conftest import ClientFactory


def payment(tid: int | str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": tid,
        "customer_id": 17,
        "terminal_id": 4242,
        "amount": 50.0,
        "timestamp": "2018-09-12T14:30:00",
    }
    return body | changes


def test_payments_are_scored_with_the_features_their_history_gives(client: TestClient) -> None:
    first = client.post("/v1/fraud/transactions", json=payment(1, amount=40.0))
    assert first.status_code == 200, first.text
    batch = {
        "transactions": [
            payment(3, amount=90.0, timestamp="2018-09-13T02:00:00"),  # sent first, later
            payment(2, amount=60.0, timestamp="2018-09-12T20:00:00"),
        ]
    }
    answer = client.post("/v1/fraud/transactions?include=features", json=batch)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["transaction_id"] for r in results] == [3, 2]  # request order
    night = results[0]["features"]
    assert night["customer_nb_tx_1d"] == 3 and night["customer_avg_amount_1d"] == 190.0 / 3
    assert night["during_night"] == 1.0 and night["during_weekend"] == 0.0
    assert night["terminal_nb_tx_30d"] == 0 and night["terminal_risk_30d"] == 0.0
    assert results[1]["features"]["customer_nb_tx_1d"] == 2  # it sees 1, not 3
    assert len(night) == 20  # and what only the history knows: against 40 and 60 before
    assert night["customer_amount_over_mean_30d"] == 90.0 / 50.0
    assert night["customer_nb_high_amount_14d"] == 0
    assert night["terminal_first_known_fraud_age_30d"] == 0.0  # nothing known there yet
    assert night["terminal_risk_last_3_known"] == 0.0
    expected = model_factory.fraud_probability(90.0, night=True)
    assert results[0]["fraud_probability"] == pytest.approx(expected, rel=1e-6)
    assert "features" not in first.json()["results"][0]


def test_a_retry_gets_its_first_answer_and_is_not_counted_twice(client: TestClient) -> None:
    first = client.post("/v1/fraud/transactions", json=payment("a"))
    again = client.post("/v1/fraud/transactions", json=payment("a"))
    assert again.json()["results"] == first.json()["results"]
    later = client.post("/v1/fraud/transactions?include=features", json=payment("b"))
    assert later.json()["results"][0]["features"]["customer_nb_tx_1d"] == 2
    conflict = client.post("/v1/fraud/transactions", json=payment("a", amount=51.0))
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "payment_conflict"


def test_labels_move_the_terminal_risk_a_week_later(client: TestClient) -> None:
    client.post("/v1/fraud/transactions", json=payment(1, customer_id=1))
    client.post("/v1/fraud/transactions", json=payment(2, customer_id=2))
    labelled = client.post(
        "/v1/fraud/labels",
        json={
            "labels": [
                {"transaction_id": t, "fraud": f}
                for t, f in [(1, True), (9, True), (2, False), (1, True)]
            ]
        },
    )
    assert [r["outcome"] for r in labelled.json()["results"]] == [
        "applied", "unknown", "applied", "unchanged"
    ]  # fmt: skip
    week_later = payment(3, customer_id=3, timestamp="2018-09-19T15:00:00")
    answer = client.post("/v1/fraud/transactions?include=features", json=week_later)
    features = answer.json()["results"][0]["features"]
    assert features["terminal_nb_tx_1d"] == 2 and features["terminal_risk_1d"] == 0.5

    too_many = client.get("/v1/fraud/terminals/4242?limit=1001")
    assert too_many.status_code == 422 and "at most 1000" in too_many.text
    view = client.get("/v1/fraud/terminals/4242?limit=2").json()
    assert [t["transaction_id"] for t in view["transactions"]] == [3, 2]
    assert view["transactions"][1]["fraud"] is False
    assert view["features"]["terminal_risk_1d"] == 0.5
    card = client.get("/v1/fraud/customers/1").json()
    assert card["transactions"][0]["fraud"] is True and card["features"]["customer_nb_tx_1d"] == 1
    assert client.get("/v1/fraud/customers/404").status_code == 404


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (payment(1, amount="50"), 422, "amount"),
        (payment(1) | {"customer_nb_tx_1d": 3}, 422, "customer_nb_tx_1d"),
        ({"transactions": []}, 422, "transactions"),
        (payment(1, timestamp="yesterday"), 422, "timestamp"),
    ],
)
def test_bad_payments_are_refused_and_nothing_is_recorded(
    client: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    answer = client.post("/v1/fraud/transactions", json=body)
    assert answer.status_code == status and field in answer.text
    assert client.get("/v1/fraud/customers/17").status_code == 404


def test_a_payment_older_than_the_retention_is_a_422(client: TestClient) -> None:
    client.post("/v1/fraud/transactions", json=payment(1, timestamp="2018-09-12T00:00:00"))
    old = client.post("/v1/fraud/transactions", json=payment(2, timestamp="2018-08-01T00:00:00"))
    assert old.status_code == 422 and "older than the history keeps" in old.text


def test_a_failed_scoring_leaves_no_trace(make_client: ClientFactory, tmp_path: Any) -> None:
    repo = tmp_path / "fragile-models"
    model_factory.fraud_model_failing_on_large_amounts(repo)
    model_factory.image_model(repo)
    client = make_client(repo, default_fraud_model="fragile")
    failed = client.post("/v1/fraud/transactions", json=payment(1, amount=5000.0))
    assert failed.status_code == 500
    assert client.get("/v1/fraud/customers/17").status_code == 404
    assert client.post("/v1/fraud/transactions", json=payment(1, amount=10.0)).status_code == 200


def test_history_survives_a_restart(make_client: ClientFactory, tmp_path: Any) -> None:
    state = tmp_path / "kept"
    first = make_client(state_dir=state)
    first.post("/v1/fraud/transactions", json=payment(1))
    first.__exit__(None, None, None)
    second = make_client(state_dir=state)
    answer = second.post("/v1/fraud/transactions?include=features", json=payment(2))
    assert answer.json()["results"][0]["features"]["customer_nb_tx_1d"] == 2


def test_an_unopenable_history_is_503_while_the_rest_serves(
    make_client: ClientFactory, tmp_path: Any
) -> None:
    (tmp_path / "not-a-dir").write_text("")
    client = make_client(state_dir=tmp_path / "not-a-dir")
    answer = client.post("/v1/fraud/transactions", json=payment(1))
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "store_unavailable"
    assert answer.headers["retry-after"] == "1"
    assert client.get("/v1/fraud/customers/17").status_code == 503
    assert client.post("/v1/fraud/score", json={"transactions": []}).status_code == 422
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "cannot be opened" in ready.json()["degraded"][0]


def test_the_history_size_is_in_the_metrics(client: TestClient) -> None:
    client.post("/v1/fraud/transactions", json={"transactions": [payment(1), payment(2)]})
    metrics = client.get("/metrics").text
    assert "deepserve_fraud_history_payments 2.0" in metrics
    size = next(m for m in metrics.splitlines() if m.startswith("deepserve_fraud_history_bytes "))
    assert float(size.split()[1]) > 0
    assert "deepserve_fraud_history_newest_event_seconds 1.5367626e+09" in metrics


def test_every_answered_payment_survives_a_kill_during_load(tmp_path: Any) -> None:
    import signal
    import sqlite3
    import threading

    import httpx

    from tests.server import running_server

    state = tmp_path / "state"
    answered: list[int] = []

    def send(base: str) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            for i in range(100_000):
                stamp = f"2018-09-12T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}"
                try:
                    answer = http.post(
                        "/v1/fraud/transactions",
                        json=payment(i, customer_id=i % 13, timestamp=stamp),
                    )
                except httpx.TransportError:
                    return  # the server is gone
                if answer.status_code == 200:
                    answered.append(i)

    with running_server(state_dir=str(state), log_level="warning") as base:
        sender = threading.Thread(target=send, args=(base,))
        sender.start()
        deadline = time.monotonic() + 60
        while len(answered) < 300 and sender.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(answered) >= 300, base.output()
        base.process.send_signal(signal.SIGKILL)  # with a request in flight, most likely
        base.process.wait()
        sender.join()
    with sqlite3.connect(state / "fraud-history.db") as db:
        kept = [int(row[0]) for row in db.execute("SELECT transaction_id FROM payments")]
    assert len(kept) == len(set(kept))
    assert set(answered) <= set(kept)  # every answered payment, once
