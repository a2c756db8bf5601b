"""The models committed in models/: they load, and serve what their cards promise.

The accuracy checks read the real datasets and skip when they are absent.
"""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest

from app.codecs.images import decode_image, to_input_rows
from app.codecs.transactions import needs_history
from app.model_card import ModelCard
from app.serving.batching import DynamicBatcher
from app.serving.providers import ProviderChoice
from app.serving.repository import discover, read_card
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from tests.conftest import DATASETS, REPO_ROOT
from training.image_data import read_test_jpegs

MODELS = REPO_ROOT / "models"
CIFAR = DATASETS / "cifar10-jpeg.tar.gz"
FRAUD = DATASETS / "fraud-transactions.csv.gz"
needs_cifar = pytest.mark.skipif(not CIFAR.exists(), reason=f"{CIFAR} is absent")
needs_fraud = pytest.mark.skipif(not FRAUD.exists(), reason=f"{FRAUD} is absent")


def latest_card(name: str) -> ModelCard:
    return read_card(discover(MODELS, [name])[name][-1])


def test_the_committed_models_have_valid_cards_and_load() -> None:
    found = discover(MODELS)
    assert {"cifar10", "fraud"} <= set(found)
    settings = Settings(_env_file=None)
    for versions in found.values():
        for version in versions:
            card = read_card(version)
            assert card.provenance.command.startswith("python -m training")
            runtime = ModelRuntime.load(
                card,
                version.onnx_path,
                settings.registry_config().runtime,
                ProviderChoice(["CPUExecutionProvider"], "test"),
            )
            assert runtime.warm_up() >= 0.0


@needs_cifar
def test_cifar10_accuracy_over_http_matches_its_card(make_client) -> None:
    card = latest_card("cifar10")
    images = read_test_jpegs(CIFAR, per_class=200)
    client = make_client(repo=MODELS, default_image_model="cifar10")
    # 2,000 of the 10,000 test images: a sampling spread of about 1 point.
    accuracy = _accuracy_over_http(client, images)
    assert accuracy == pytest.approx(float(card.metrics["test_accuracy"]), abs=0.03)


def _accuracy_over_http(client, images: list[tuple[str, bytes]]) -> float:
    """Top-1 accuracy of the default image model on (label, JPEG) pairs, 50 a request."""
    correct = 0
    for start in range(0, len(images), 50):
        chunk = images[start : start + 50]
        files = [("file", (f"{i}.jpg", data, "image/jpeg")) for i, (_, data) in enumerate(chunk)]
        response = client.post("/v1/classify?top_k=1", files=files)
        assert response.status_code == 200
        for (label, _), result in zip(chunk, response.json()["results"], strict=True):
            correct += result["predictions"][0]["label"] == label
    return correct / len(images)


@needs_cifar
def test_cat_vs_dog_accuracy_over_http_matches_its_card(make_client) -> None:
    """The 224x224 network: the service resizes each 32x32 JPEG as its card says and scores
    what training measured."""
    card = latest_card("cat-vs-dog")
    assert card.image is not None and (card.image.height, card.image.width) == (224, 224)
    images = [
        (label, data)
        for label, data in read_test_jpegs(CIFAR, per_class=200)
        if label in card.labels
    ]
    client = make_client(repo=MODELS, default_image_model="cat-vs-dog")
    assert len(images) == 400
    # 400 of the 2,000 cat and dog test images: a sampling spread of about 2 points.
    accuracy = _accuracy_over_http(client, images)
    assert accuracy == pytest.approx(float(card.metrics["test_accuracy"]), abs=0.06)


@needs_cifar
@pytest.mark.anyio
async def test_cifar10_batched_outputs_equal_unbatched() -> None:
    card = latest_card("cifar10")
    version = discover(MODELS, ["cifar10"])["cifar10"][-1]
    runtime = ModelRuntime.load(
        card,
        version.onnx_path,
        Settings(_env_file=None).registry_config().runtime,
        ProviderChoice(["CPUExecutionProvider"], "test"),
    )
    assert card.image is not None
    pixels = np.stack(
        [decode_image(data, card.image, 10**6) for _, data in read_test_jpegs(CIFAR, per_class=3)]
    )
    rows = to_input_rows(pixels, card.image, card.input)
    expected = np.concatenate([runtime.run_batch(rows[i : i + 1]) for i in range(len(rows))])
    batcher = DynamicBatcher(
        runtime.run_batch,
        name="cifar10",
        max_batch_size=8,
        max_queue_delay_ms=5,
        max_queue_items=1000,
    )
    batcher.start()
    cuts = [0, 1, 4, 5, 13, 20, 30]
    outputs = await asyncio.gather(
        *(batcher.infer(rows[a:b], time.monotonic() + 30) for a, b in itertools.pairwise(cuts))
    )
    np.testing.assert_allclose(np.concatenate(outputs), expected, atol=1e-5)
    assert max(batcher.stats.sizes) > 1
    await batcher.close()


@needs_fraud
@pytest.mark.parametrize("history", [False, True], ids=["benchmark-15", "history-17"])
def test_fraud_scores_over_http_reproduce_the_cards_test_metrics(make_client, history) -> None:
    """The newest version of each kind: one that takes the client's features through
    `/v1/fraud/score`, one that needs the history through v2 with the offline features
    (that the history computes the same online is the replay's proof)."""
    pytest.importorskip("pandas")
    from training.fraud_data import (
        feature_matrix,
        load_transactions,
        service_transaction,
        split_window,
    )
    from training.fraud_metrics import fraud_metrics

    versions = [
        v for v in discover(MODELS, ["fraud"])["fraud"] if needs_history(read_card(v)) == history
    ]
    if not versions:
        pytest.skip("no committed fraud version of this kind")
    card = read_card(versions[-1])
    assert card.tabular is not None
    window_start = str(card.metrics["window"]).split()[1]  # "train 2018-07-25 +7d, ..."
    test = split_window(load_transactions(str(FRAUD)), window_start).test
    client = make_client(repo=MODELS, default_fraud_model="fraud")
    scores: list[float] = []
    records = test.to_dict("records")
    for start in range(0, len(records), 1000):
        if history:
            rows = feature_matrix(test.iloc[start : start + 1000], tuple(card.tabular.features))
            tensor = {"name": "features", "datatype": "FP32", "shape": list(rows.shape)}
            response = client.post(
                f"/v2/models/fraud/versions/{card.version}/infer",
                json={"inputs": [{**tensor, "data": rows.ravel().tolist()}]},
            )
            assert response.status_code == 200, response.text
            scores += response.json()["outputs"][0]["data"]
            continue
        body = {"transactions": [service_transaction(r) for r in records[start : start + 1000]]}
        response = client.post("/v1/fraud/score", json=body)
        assert response.status_code == 200
        assert response.json()["version"] == card.version
        scores += [r["fraud_probability"] for r in response.json()["results"]]
    metrics = fraud_metrics(test, np.asarray(scores))
    assert metrics["auc_roc"] == pytest.approx(card.metrics["test_auc_roc"], abs=1e-3)
    assert metrics["average_precision"] == pytest.approx(
        card.metrics["test_average_precision"], abs=2e-3
    )
