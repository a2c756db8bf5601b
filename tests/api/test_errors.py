"""Errors in the one shape: unknown routes, failed batches, non-finite outputs."""

from __future__ import annotations

from pathlib import Path

from tests import model_factory
from tests.conftest import transaction


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    response = client.get("/v1/fraud/score")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_a_runtime_failure_fails_only_its_batch(model_repo: Path, make_client, caplog) -> None:
    model_factory.fraud_model_failing_on_large_amounts(model_repo)
    client = make_client()
    with caplog.at_level("ERROR"):
        failed = client.post(
            "/v1/models/fragile/score",
            json={"transactions": [transaction(), transaction(amount=5000.0)]},
        )
    assert failed.status_code == 500
    assert failed.json()["error"]["code"] == "inference_failed"
    assert "Traceback" in caplog.text  # the cause is logged, not sent to the client
    assert "Traceback" not in failed.text
    # The same model keeps serving what it can.
    assert client.post("/v1/models/fragile/score", json=transaction()).status_code == 200


def test_non_finite_scores_are_an_error_not_an_answer(model_repo: Path, make_client) -> None:
    model_factory.fraud_model(model_repo, name="broken", amount_weight=float("nan"))
    client = make_client()
    for body in (transaction(), {"transactions": [transaction()] * 3}):
        response = client.post("/v1/models/broken/score", json=body)
        assert response.status_code == 500
        assert response.json()["error"] == {
            "code": "inference_failed",
            "message": "the model produced non-finite probabilities",
        }
