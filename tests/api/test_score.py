"""POST /v1/models/{model}/score and /v1/fraud/score, through the real app."""

from __future__ import annotations

import json

import pytest

from app.codecs.transactions import IDENTIFIER_RULE
from tests.conftest import transaction
from tests.model_factory import fraud_probability


def test_one_transaction_is_scored(client) -> None:
    response = client.post("/v1/models/tiny-fraud/score", json=transaction(amount=50.0))
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "tiny-fraud" and body["version"] == 1
    (result,) = body["results"]
    assert result["transaction_id"] == "tx-1"
    assert result["fraud_probability"] == pytest.approx(fraud_probability(50.0), rel=1e-5)
    assert result["decision"] == "approve"


def test_a_batch_keeps_request_order_and_applies_thresholds(client) -> None:
    amounts = [10.0, 400.0, 210.0, 0.0, 300.0]  # sigmoid(0.02a - 4): ~0.02, ~0.98, ~0.55, ...
    body = {
        "transactions": [transaction(transaction_id=i, amount=a) for i, a in enumerate(amounts)]
    }
    response = client.post("/v1/fraud/score", json=body)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["transaction_id"] for r in results] == list(range(5))
    for result, amount in zip(results, amounts, strict=True):
        expected = fraud_probability(amount)
        assert result["fraud_probability"] == pytest.approx(expected, rel=1e-5)
        decision = "decline" if expected >= 0.9 else "review" if expected >= 0.5 else "approve"
        assert result["decision"] == decision


@pytest.mark.parametrize(
    "timestamp,night",
    [
        ("2018-09-12T03:10:00", True),
        ("2018-09-12T06:59:59", True),
        ("2018-09-12T07:00:00", False),
        ("2018-09-12T23:59:00+02:00", False),
        ("2018-09-12T02:00:00Z", True),
    ],
)
def test_night_is_derived_from_the_timestamp(client, timestamp: str, night: bool) -> None:
    response = client.post("/v1/fraud/score", json=transaction(amount=100.0, timestamp=timestamp))
    probability = response.json()["results"][0]["fraud_probability"]
    assert probability == pytest.approx(fraud_probability(100.0, night=night), rel=1e-5)


def test_behavioural_features_reach_the_model(client) -> None:
    response = client.post("/v1/fraud/score", json=transaction(amount=100.0, terminal_risk_7d=0.5))
    probability = response.json()["results"][0]["fraud_probability"]
    assert probability == pytest.approx(fraud_probability(100.0, risk_7d=0.5), rel=1e-5)


@pytest.mark.parametrize(
    "changes,field",
    [
        ({"amount": -1.0}, "amount"),
        ({"amount": 1e300}, "amount"),
        ({"amount": "12"}, "amount"),  # strict: no numbers as strings
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": 1536755400}, "timestamp"),
        ({"terminal_risk_1d": 1.5}, "terminal_risk_1d"),
        ({"customer_nb_tx_7d": -3}, "customer_nb_tx_7d"),
        ({"customer_nb_tx_7d": 2.5}, "customer_nb_tx_7d"),
        ({"transaction_id": None}, "transaction_id"),
        ({"transaction_id": True}, "transaction_id"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(client, changes: dict, field: str) -> None:
    response = client.post("/v1/fraud/score", json=transaction(**changes))
    assert response.status_code == 422, response.text[:500]
    assert len(response.content) < 2000  # no field is echoed back
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert field in error["message"]
    assert any(d["field"].endswith(field) for d in error["details"])


def test_a_missing_field_is_422(client) -> None:
    body = transaction()
    del body["customer_avg_amount_30d"]
    response = client.post("/v1/fraud/score", json=body)
    assert response.status_code == 422
    assert "customer_avg_amount_30d" in response.json()["error"]["message"]


def test_field_errors_in_a_batch_name_the_index(client) -> None:
    body = {"transactions": [transaction(), transaction(amount=-5)]}
    response = client.post("/v1/fraud/score", json=body)
    assert response.status_code == 422
    assert "transactions.1.amount" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"amount": NaN}',
        b'{"amount": Infinity}',
        b"[" * 5000,
        b'{"transaction_id": "tx-\xed\xa0\x80"}',  # a surrogate, which UTF-8 cannot hold
    ],
)
def test_malformed_json_is_400(client, raw: bytes) -> None:
    response = client.post(
        "/v1/fraud/score", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_input"


@pytest.mark.parametrize(
    "document", [[], "text", 3, {"transactions": []}, {"transactions": "many"}]
)
def test_wrong_json_shapes_are_422(client, document) -> None:
    response = client.post(
        "/v1/fraud/score",
        content=json.dumps(document),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


def test_empty_body_is_400(client) -> None:
    response = client.post(
        "/v1/fraud/score", content=b"", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_non_json_content_type_is_415(client) -> None:
    response = client.post(
        "/v1/fraud/score", content=json.dumps(transaction()), headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_too_many_transactions_is_413(make_client) -> None:
    client = make_client(max_transactions_per_request=3)
    body = {"transactions": [transaction(transaction_id=i) for i in range(4)]}
    response = client.post("/v1/fraud/score", json=body)
    assert response.status_code == 413
    assert "at most 3" in response.json()["error"]["message"]


def test_a_transaction_to_an_image_model_is_400(client) -> None:
    response = client.post("/v1/models/tiny-image/score", json=transaction())
    assert response.status_code == 400


def test_a_lone_transaction_may_carry_the_word_transactions(client) -> None:
    # Batches are recognised by their "transactions" key; a value spelled so is no batch.
    response = client.post("/v1/fraud/score", json=transaction(customer_id="transactions"))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["transaction_id"] == "tx-1"


@pytest.mark.parametrize("bad", [1.5, 2**63, -(2**63) - 1, "", "t" * 65])
def test_an_identifier_error_is_reported_once_at_the_field(client, bad: float) -> None:
    response = client.post("/v1/fraud/score", json=transaction(terminal_id=bad))
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details == [{"field": "terminal_id", "message": IDENTIFIER_RULE}]


@pytest.mark.parametrize("largest", [2**63 - 1, -(2**63)])
def test_64_bit_identifiers_come_back_exactly(client, largest: int) -> None:
    response = client.post("/v1/fraud/score", json=transaction(transaction_id=largest))
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["transaction_id"] == largest
