"""Model listing, versions, readiness, and models that fail to load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import model_factory
from tests.conftest import transaction


def test_health_is_always_ok(client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_once_every_model_is_loaded(client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


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


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    assert client.get("/nowhere").json()["error"]["code"] == "not_found"
    response = client.get("/v1/fraud/score")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


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


def test_a_broken_model_fails_alone_and_says_why(model_repo: Path, make_client, caplog) -> None:
    broken = model_repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text('{"name": "broken", "version": 1}')
    bad_onnx = model_factory.fraud_model(model_repo, name="bad-onnx")
    (bad_onnx / "model.onnx").write_bytes(b"not onnx")
    with caplog.at_level("ERROR"):
        client = make_client()
    failures = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert len(failures) == 2
    assert any("broken/1" in f and "kind" in f for f in failures)
    versions = client.get("/v1/models/broken").json()["versions"]
    assert versions[0]["state"] == "failed" and "invalid" in versions[0]["reason"]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert any(p.startswith("bad-onnx/1: failed") for p in ready.json()["not_ready"])
    # The others still serve.
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200
    response = client.post("/v1/models/broken/score", json=transaction())
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_a_card_that_disagrees_with_its_graph_fails(model_repo: Path, make_client) -> None:
    folder = model_factory.fraud_model(model_repo, name="mismatch")
    card = (folder / "model.json").read_text().replace('"name": "features"', '"name": "inputs"')
    (folder / "model.json").write_text(card)
    client = make_client()
    (version,) = client.get("/v1/models/mismatch").json()["versions"]
    assert version["state"] == "failed"
    assert "'inputs' is not in the graph" in version["reason"]


def test_only_configured_models_load_and_missing_ones_are_reported(make_client) -> None:
    client = make_client(models=["tiny-fraud", "absent"])
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [
        "absent",
        "tiny-fraud",
    ]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["not_ready"] == ["absent: no versions found"]


def test_docs_work_offline(client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/docs-assets/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()
    assert "Transaction" in schema["components"]["schemas"]
    assert "/v1/models/{model}/classify" in schema["paths"]


def test_settings_override_the_cards_batching(make_client) -> None:
    client = make_client(max_queue_delay_ms=3.0, batching={"tiny-fraud": {"max_batch_size": 1}})
    models = {m["name"]: m["versions"][0] for m in client.get("/v1/models").json()["models"]}
    assert models["tiny-fraud"]["batching"] == {"max_batch_size": 1, "max_queue_delay_ms": 3.0}
    assert models["tiny-image"]["batching"] == {"max_batch_size": 8, "max_queue_delay_ms": 3.0}
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200


def test_every_request_gets_an_id_and_one_json_log_line(client, caplog) -> None:
    with caplog.at_level("INFO", logger="deepserve.requests"):
        mine = client.post("/v1/fraud/score", json=transaction(), headers={"X-Request-ID": "abc-1"})
        made = client.post("/v1/models/nope/score", json=transaction())
    assert mine.headers["x-request-id"] == "abc-1"
    assert len(made.headers["x-request-id"]) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "deepserve.requests"]
    assert lines[0] == {
        **lines[0],
        "request_id": "abc-1",
        "route": "/v1/fraud/score",
        "status": 200,
        "model": "tiny-fraud",
        "version": 1,
        "items": 1,
    }
    assert lines[0]["latency_ms"] > 0
    assert lines[1]["status"] == 404 and lines[1]["route"] == "/v1/models/{model}/score"


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


def test_the_newest_version_of_every_model_loads_first(
    model_repo: Path, make_client, caplog
) -> None:
    model_factory.fraud_model(model_repo, version=2)
    model_factory.image_model(model_repo, version=2)
    with caplog.at_level("INFO", logger="app.serving.registry"):
        make_client()
    ready = [r.getMessage().split()[1] for r in caplog.records if " ready on " in r.getMessage()]
    # Readiness needs one ready version per model: both newest ones come before any older.
    assert set(ready[:2]) == {"tiny-fraud/2", "tiny-image/2"}
    assert set(ready[2:]) == {"tiny-fraud/1", "tiny-image/1"}
