"""The model registry: loading, failures that stay contained, and batching settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import model_factory
from tests.conftest import transaction


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


def test_a_card_naming_a_float16_graph_that_is_not_there_fails(
    model_repo: Path, make_client
) -> None:
    folder = model_factory.image_model(model_repo, name="half-missing")
    card = json.loads((folder / "model.json").read_text())
    card["fp16"] = {"parity_tolerance": 1e-2, "parity_max_abs_diff": 1e-3, "largest_activation": 9}
    (folder / "model.json").write_text(json.dumps(card))
    client = make_client()
    (version,) = client.get("/v1/models/half-missing").json()["versions"]
    assert version["state"] == "failed" and "model.fp16.onnx is missing" in version["reason"]


def test_a_graph_that_fails_its_warm_up_fails_and_others_load(
    model_repo: Path, make_client
) -> None:
    folder = model_factory.fraud_model(model_repo, name="unrunnable")
    model_factory.look_amounts_up(folder / "model.onnx", table_size=0)  # loads, never runs
    client = make_client()
    (version,) = client.get("/v1/models/unrunnable").json()["versions"]
    assert version["state"] == "failed" and "warm-up" in version["reason"]
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200


def test_only_configured_models_load_and_missing_ones_are_reported(make_client) -> None:
    client = make_client(models=["tiny-fraud", "absent"])
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [
        "absent",
        "tiny-fraud",
    ]
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["not_ready"] == ["absent: no versions found"]


def test_settings_override_the_cards_batching(make_client) -> None:
    client = make_client(max_queue_delay_ms=3.0, batching={"tiny-fraud": {"max_batch_size": 1}})
    models = {m["name"]: m["versions"][0] for m in client.get("/v1/models").json()["models"]}
    assert models["tiny-fraud"]["batching"] == {"max_batch_size": 1, "max_queue_delay_ms": 3.0}
    assert models["tiny-image"]["batching"] == {"max_batch_size": 8, "max_queue_delay_ms": 3.0}
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200


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


def test_gpu_settings_without_a_gpu_say_so_once_and_serve_on_the_cpu(make_client, caplog) -> None:
    from app.serving.providers import count_cuda_devices

    if count_cuda_devices() > 0:
        pytest.skip("this machine has a GPU: the settings can be honoured")
    with caplog.at_level("ERROR", logger="app.serving.providers"):
        client = make_client(device="cuda", tensorrt=True, cuda_graphs=True)
    (error,) = [r.getMessage() for r in caplog.records if r.name == "app.serving.providers"]
    assert "DEEPSERVE_DEVICE=cuda and DEEPSERVE_TENSORRT and DEEPSERVE_CUDA_GRAPHS set" in error
    assert error.endswith("serving on the CPU")
    assert client.get("/readyz").status_code == 200
    models = {m["name"]: m["versions"][0] for m in client.get("/v1/models").json()["models"]}
    assert models["tiny-fraud"]["providers"] == ["CPUExecutionProvider"]
    assert client.post("/v1/fraud/score", json=transaction()).status_code == 200
