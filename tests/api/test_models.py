"""The model routes: what the server has, and which version answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import model_factory
from tests.conftest import transaction


def test_models_are_listed_with_kind_inputs_labels_and_state(client) -> None:
    models = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert set(models) == {"tiny-image", "tiny-fraud"}
    image = models["tiny-image"]
    assert image["served_version"] == 1
    (version,) = image["versions"]
    assert version["state"] == "ready"
    assert version["kind"] == "image_classifier"
    assert version["labels"] == model_factory.IMAGE_LABELS
    assert version["inputs"] == [{"name": "pixels", "dtype": "uint8", "shape": [None, 8, 8, 3]}]
    assert version["providers"] == ["CPUExecutionProvider"]
    assert version["batching"] == {"max_batch_size": 8, "max_queue_delay_ms": 0.0}
    fraud = client.get("/v1/models/tiny-fraud").json()["versions"][0]
    assert fraud["thresholds"]["decline"] == 0.9
    assert len(fraud["features"]) == 15


def test_unknown_model_is_404(client) -> None:
    for path in ("/v1/models/nope", "/v1/models/nope/score", "/v1/models/nope/classify"):
        response = client.get(path) if path.count("/") == 3 else client.post(path, json={})
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] in {"model_not_found", "not_found"}


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models/..%2F..%2Fetc%2Fpasswd/score",
        "/v1/models/../../etc/score",
        "/v1/models/%2e%2e/score",
    ],
)
def test_path_traversal_in_names_is_404(client, path: str) -> None:
    response = client.post(path, json=transaction())
    assert response.status_code == 404
    assert "error" in response.json()


def test_the_highest_version_is_served_unless_another_is_named(
    model_repo: Path, make_client
) -> None:
    model_factory.fraud_model(model_repo, version=2, amount_weight=0.0)
    client = make_client()
    latest = client.post("/v1/fraud/score", json=transaction(amount=300.0)).json()
    assert latest["version"] == 2
    assert latest["results"][0]["fraud_probability"] == pytest.approx(
        model_factory.fraud_probability(300.0, amount_weight=0.0), rel=1e-5
    )
    pinned = client.post("/v1/fraud/score?version=1", json=transaction(amount=300.0)).json()
    assert pinned["version"] == 1
    assert client.post("/v1/fraud/score?version=3", json=transaction()).status_code == 404
    response = client.post("/v1/fraud/score?version=0", json=transaction())
    assert response.status_code == 422
    assert "version" in response.json()["error"]["message"]
