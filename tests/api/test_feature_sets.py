"""Versions of one fraud model on different feature sets, through the real app: the
stateful route computes what the history knows and serves the newest version; the stateless
`/score` serves the newest version a client can send features for, and refuses by name one
that needs the history."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests import model_factory
from tests.conftest import ClientFactory, transaction
from tests.model_factory import fraud_probability


@pytest.fixture
def two_sets(tmp_path: Path, make_client: ClientFactory) -> TestClient:
    root = tmp_path / "sets"
    model_factory.fraud_model(root, version=1, reasons=True)
    model_factory.fraud_model(root, version=2, reasons=True, feature_set="history-17")
    return make_client(root)


def payment(tid: int, amount: float, timestamp: str) -> dict:
    return {
        "transaction_id": tid,
        "customer_id": 5,
        "terminal_id": 8,
        "amount": amount,
        "timestamp": timestamp,
    }


def test_score_serves_the_newest_version_that_takes_sent_features(two_sets: TestClient) -> None:
    answer = two_sets.post("/v1/fraud/score", json=transaction(amount=50.0))
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 1
    result = answer.json()["results"][0]
    assert result["fraud_probability"] == pytest.approx(fraud_probability(50.0), rel=1e-5)


def test_score_refuses_a_version_that_needs_the_history(two_sets: TestClient) -> None:
    answer = two_sets.post("/v1/fraud/score?version=2", json=transaction(amount=50.0))
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "needs_history"
    assert "customer_amount_over_mean_30d" in error["message"]
    assert "/v1/fraud/transactions" in error["message"]


def test_the_stateful_route_computes_the_history_set(two_sets: TestClient) -> None:
    for tid, amount, when in [(1, 20.0, "2018-09-01T10:00:00"), (2, 40.0, "2018-09-05T10:00:00")]:
        assert two_sets.post("/v1/fraud/transactions", json=payment(tid, amount, when)).is_success
    now = payment(3, 300.0, "2018-09-10T10:00:00")
    answer = two_sets.post("/v1/fraud/transactions?include=features&reasons=always", json=now)
    assert answer.status_code == 200, answer.text
    assert answer.json()["version"] == 2
    (result,) = answer.json()["results"]
    features = result["features"]
    assert features["customer_amount_over_mean_30d"] == 10.0  # 300 over (20 + 40) / 2
    assert features["customer_nb_high_amount_14d"] == 0
    # The logistic model adds the ratio to its logit: 300 * 0.02 - 4 + 10.
    assert result["fraud_probability"] == pytest.approx(1 / (1 + 2.718281828**-12), rel=1e-5)
    reasons = {r["code"]: r for r in result["reasons"]}
    ratio = reasons["customer_amount_over_mean_30d"]
    assert ratio["text"] == (
        "amount 300.00 is 10.0 times the mean of card 5's 2 earlier payments in 30 days (30.00)"
    )
    # The older version on the same route reads its 15 of them.
    older = two_sets.post(
        "/v1/fraud/transactions?version=1&record=false", json=payment(4, 300.0, now["timestamp"])
    )
    assert older.status_code == 200, older.text
    expected = fraud_probability(300.0)
    assert older.json()["results"][0]["fraud_probability"] == pytest.approx(expected, rel=1e-5)


def test_routes_that_take_sent_inputs_serve_the_older_version_by_default(
    two_sets: TestClient,
) -> None:
    info = two_sets.get("/v1/models/tiny-fraud").json()
    assert info["served_version"] == 2 and info["served_version_for_sent_inputs"] == 1
    assert [v["feature_set"] for v in info["versions"]] == ["benchmark-15", "history-17"]
    assert two_sets.get("/v2/models/tiny-fraud").json()["inputs"][0]["shape"] == [-1, 15]
    row = [50.0, 0, 0, 1, 50.0, 1, 50.0, 1, 50.0, 0, 0.0, 0, 0.0, 0, 0.0]
    tensor = {"name": "features", "datatype": "FP32"}
    sent = two_sets.post(
        "/v2/models/tiny-fraud/infer", json={"inputs": [{**tensor, "shape": [1, 15], "data": row}]}
    )
    assert sent.status_code == 200, sent.text
    assert sent.json()["model_version"] == "1"
    # A v2 client that computes the history's two itself names the version.
    wider = {"inputs": [{**tensor, "shape": [1, 17], "data": [*row, 4.0, 0]}]}
    named = two_sets.post("/v2/models/tiny-fraud/versions/2/infer", json=wider)
    assert named.status_code == 200, named.text
    (probability,) = named.json()["outputs"][0]["data"]
    assert probability == pytest.approx(1 / (1 + 2.718281828 ** -(50 * 0.02 - 4 + 4)), rel=1e-5)


def test_a_failed_version_of_the_fifteen_is_not_replaced_by_one_that_needs_the_history(
    tmp_path: Path, make_client: ClientFactory
) -> None:
    root = tmp_path / "failed"
    model_factory.fraud_model(root, version=1)
    model_factory.fraud_model(root, version=2, feature_set="history-17")
    (root / "tiny-fraud" / "1" / "model.onnx").write_bytes(b"not onnx")
    client = make_client(root)
    refused = client.post("/v1/fraud/score", json=transaction(amount=50.0))
    assert refused.status_code == 503
    assert "no ready version that takes the client's own inputs" in refused.text
    assert "1: failed" in refused.text
    recorded = client.post("/v1/fraud/transactions", json=payment(1, 50.0, "2018-09-01T10:00:00"))
    assert recorded.status_code == 200 and recorded.json()["version"] == 2
    assert client.get("/readyz").status_code == 200  # the model serves: as before


def test_a_card_whose_columns_are_not_its_named_set_fails_to_load(
    tmp_path: Path, make_client: ClientFactory
) -> None:
    import json

    root = tmp_path / "mislabelled"
    folder = model_factory.fraud_model(root, version=1)
    card = json.loads((folder / "model.json").read_text())
    card["tabular"]["feature_set"] = "history-17"  # but its 15 columns
    (folder / "model.json").write_text(json.dumps(card))
    model_factory.fraud_model(root, version=2)
    client = make_client(root)
    versions = {v["version"]: v for v in client.get("/v1/models/tiny-fraud").json()["versions"]}
    assert versions[1]["state"] == "failed"
    assert "are not the history-17 set" in versions[1]["reason"]
    assert versions[2]["state"] == "ready"


def test_a_retry_keeps_the_reasons_of_its_first_answer_when_its_card_has_changed(
    two_sets: TestClient,
) -> None:
    """Sent again with reasons for every row, after an earlier-dated payment changed the
    card's 30-day mean: the answer, reasons included, is the first one, about the
    features it had then (not those its card gives it now)."""
    for tid, amount, when in [(1, 20.0, "2018-09-01T10:00:00"), (2, 40.0, "2018-09-05T10:00:00")]:
        assert two_sets.post("/v1/fraud/transactions", json=payment(tid, amount, when)).is_success
    flagged = payment(3, 300.0, "2018-09-10T10:00:00")
    first = two_sets.post("/v1/fraud/transactions?reasons=always", json=flagged)
    (answer,) = first.json()["results"]
    ratio = {r["code"]: r for r in answer["reasons"]}["customer_amount_over_mean_30d"]
    assert ratio["value"] == 10.0 and ratio["contribution"] == pytest.approx(9.0)
    late = payment(4, 1000.0, "2018-09-08T10:00:00")  # dated before it: its mean is 353 now
    assert two_sets.post("/v1/fraud/transactions", json=late).is_success
    batch = {"transactions": [flagged, payment(5, 30.0, "2018-09-11T10:00:00")]}
    again = two_sets.post("/v1/fraud/transactions?reasons=always", json=batch)
    assert again.status_code == 200, again.text
    retried, new = again.json()["results"]
    assert retried == answer
    assert new["reasons"] == []  # every row explained: nothing pushed this one up
