"""The Open Inference Protocol as standard clients speak it: Triton's released
`tritonclient` (HTTP and gRPC, unmodified) against `python -m app` on the committed models.

Answers must equal `/v1`'s for the same inputs, and every error must reach the client with
the server's message while the server stays ready.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc as grpc_module
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from app.codecs.images import decode_image, to_input_rows
from app.codecs.transactions import decode_transactions, needs_history
from app.serving.repository import VersionDir, discover, read_card
from tests.conftest import encoded_image, transaction
from tests.server import RunningServer, running_server

MODELS = Path(__file__).resolve().parents[3] / "models"
COLOURS = ["red", "navy", "green", "orange", "white"]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with running_server(log_level="warning") as base:
        yield base


@pytest.fixture(scope="module")
def http(server: RunningServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: RunningServer) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(server.grpc_target)
    yield client
    client.close()


Client = Any  # httpclient or grpcclient: the same calls
CLIENTS = ["http", "grpc"]


def _client(request: pytest.FixtureRequest, name: str) -> Any:
    return request.getfixturevalue(name)


def _module(name: str) -> Any:
    return httpclient if name == "http" else grpcclient


def _images() -> list[bytes]:
    return [
        encoded_image(c, (24 + 8 * i, 20), "JPEG" if i % 2 else "PNG")
        for i, c in enumerate(COLOURS)
    ]


def _transactions(count: int) -> list[dict[str, Any]]:
    return [
        transaction(transaction_id=f"tx-{i}", amount=10.0 + 97.5 * i, terminal_risk_7d=0.1 * i)
        for i in range(count)
    ]


def _fraud_rows(transactions: list[dict[str, Any]]) -> np.ndarray:
    """The rows `/v1` computes from these transactions, computed by the same code."""
    import orjson

    # The version v2 serves to clients that send their own features, as /v1's /score does.
    card = read_card(max(ok_without_history(discover(MODELS)["fraud"]), key=lambda v: v.version))
    body = orjson.dumps({"transactions": transactions})
    return decode_transactions(body, 1000).columns_for(card)


def ok_without_history(versions: list[VersionDir]) -> list[VersionDir]:
    return [v for v in versions if not needs_history(read_card(v))]


@pytest.mark.parametrize("name", CLIENTS)
def test_liveness_readiness_and_metadata(request: pytest.FixtureRequest, name: str) -> None:
    client = _client(request, name)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cifar10") and client.is_model_ready("fraud")
    metadata = client.get_server_metadata(**_as_json(name))
    assert metadata["name"] == "deepserve"
    assert {"binary_tensor_data", "classification", "model_repository"} <= set(
        metadata["extensions"]
    )
    model = client.get_model_metadata("cifar10", **_as_json(name))
    inputs = {i["name"]: (i["datatype"], [int(d) for d in i["shape"]]) for i in model["inputs"]}
    assert inputs == {"pixels": ("UINT8", [-1, 32, 32, 3]), "images": ("BYTES", [-1, 1])}
    assert [(o["name"], o["datatype"]) for o in model["outputs"]] == [("probabilities", "FP32")]
    on_disk = {str(v.version) for v in discover(MODELS)["cifar10"]}
    assert max(on_disk) in model["versions"] and set(model["versions"]) <= on_disk
    config = client.get_model_config("fraud", **_as_json(name))
    config = config.get("config", config)
    assert int(config["max_batch_size"]) == 1000
    assert config["input"][0]["data_type"] == "TYPE_FP32"


def _as_json(name: str) -> dict[str, bool]:
    return {"as_json": True} if name == "grpc" else {}


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("name", CLIENTS)
def test_fraud_rows_score_as_on_v1(
    request: pytest.FixtureRequest, server: RunningServer, name: str, binary: bool
) -> None:
    client, module = _client(request, name), _module(name)
    transactions = _transactions(7)
    rows = _fraud_rows(transactions)
    features = module.InferInput("features", list(rows.shape), "FP32")
    if name == "http":
        features.set_data_from_numpy(rows, binary_data=binary)
        outputs = [module.InferRequestedOutput("fraud_probability", binary_data=binary)]
    else:
        features.set_data_from_numpy(rows)
        outputs = [module.InferRequestedOutput("fraud_probability")]
    result = client.infer("fraud", [features], outputs=outputs, request_id="r-7")
    probabilities = result.as_numpy("fraud_probability")
    assert probabilities.shape == (7, 1)
    response = result.get_response(**_as_json(name))
    assert response["id"] == "r-7" and response["model_name"] == "fraud"
    v1 = httpx.post(f"{server}/v1/models/fraud/score", json={"transactions": transactions})
    assert v1.status_code == 200
    expected = [r["fraud_probability"] for r in v1.json()["results"]]
    np.testing.assert_allclose(probabilities[:, 0], expected, rtol=0, atol=1e-6)
    assert response["model_version"] == str(v1.json()["version"])


@pytest.mark.parametrize("name", CLIENTS)
def test_encoded_images_and_pixel_rows_classify_as_on_v1(
    request: pytest.FixtureRequest, server: RunningServer, name: str
) -> None:
    client, module = _client(request, name), _module(name)
    images = _images()
    encoded = module.InferInput("images", [len(images), 1], "BYTES")
    encoded.set_data_from_numpy(np.array([[i] for i in images], dtype=np.object_))
    from_images = client.infer("cifar10", [encoded]).as_numpy("probabilities")
    assert from_images.shape == (len(images), 10)

    card = read_card(max(discover(MODELS)["cifar10"], key=lambda v: v.version))
    assert card.image is not None
    pixels = to_input_rows(
        np.stack([decode_image(i, card.image, 10**7) for i in images]), card.image, card.input
    )
    rows = module.InferInput("pixels", list(pixels.shape), "UINT8")
    rows.set_data_from_numpy(pixels)
    from_pixels = client.infer("cifar10", [rows]).as_numpy("probabilities")
    np.testing.assert_allclose(from_pixels, from_images, rtol=0, atol=1e-6)

    files = [
        ("file", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(images)
    ]
    v1 = httpx.post(f"{server}/v1/models/cifar10/classify?top_k=10", files=files)
    assert v1.status_code == 200
    for row, result in zip(from_images, v1.json()["results"], strict=True):
        by_label = {p["label"]: p["score"] for p in result["predictions"]}
        np.testing.assert_allclose(row, [by_label[label] for label in card.labels], atol=1e-6)


@pytest.mark.parametrize("name", CLIENTS)
def test_classification_answers_the_top_k_as_triton_does(
    request: pytest.FixtureRequest, name: str
) -> None:
    client, module = _client(request, name), _module(name)
    images = _images()[:2]
    encoded = module.InferInput("images", [2], "BYTES")
    encoded.set_data_from_numpy(np.array(images, dtype=np.object_))
    probabilities = client.infer("cifar10", [encoded]).as_numpy("probabilities")
    top3 = module.InferRequestedOutput("probabilities", class_count=3)
    classes = client.infer("cifar10", [encoded], outputs=[top3]).as_numpy("probabilities")
    assert classes.shape == (2, 3)
    labels = read_card(max(discover(MODELS)["cifar10"], key=lambda v: v.version)).labels
    for row, answer in zip(probabilities, classes, strict=True):
        best = np.argsort(-row, kind="stable")[:3]
        assert [e.decode() for e in answer] == [f"{row[j]:f}:{j}:{labels[j]}" for j in best]


@pytest.mark.parametrize("name", CLIENTS)
def test_each_error_reaches_the_client_with_the_servers_message(
    request: pytest.FixtureRequest, name: str
) -> None:
    client, module = _client(request, name), _module(name)
    rows = np.zeros((2, 15), np.float32)

    def infer(model: str, input_name: str, array: np.ndarray, datatype: str) -> None:
        tensor = module.InferInput(input_name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        client.infer(model, [tensor])

    image = np.array([b"no image"], np.object_)
    cases = [
        ("no-such-model", "features", rows, "FP32", "no model named 'no-such-model'"),
        ("fraud", "features", rows[:, :14], "FP32", "shape [2, 14], expected [N, 15]"),
        ("fraud", "features", rows.astype(np.float64), "FP64", "FP64, expected FP32"),
        ("fraud", "amount", rows, "FP32", "unexpected inference input 'amount'"),
        ("cifar10", "images", image, "BYTES", "image"),
    ]
    for model, input_name, array, datatype, message in cases:
        with pytest.raises(InferenceServerException) as failure:
            infer(model, input_name, array, datatype)
        assert message in failure.value.message()
        status = str(failure.value.status())
        assert status in ("400", "404", "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND")
    assert client.is_server_ready()


def test_truncated_binary_data_and_bad_base64_are_400s(server: RunningServer) -> None:
    features = httpclient.InferInput("features", [1, 15], "FP32")
    features.set_data_from_numpy(np.zeros((1, 15), np.float32), binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([features])
    url = f"{server}/v2/models/fraud/infer"
    headers = {"Inference-Header-Content-Length": str(header_length)}
    cut = httpx.post(url, content=body[:-4], headers=headers)
    assert cut.status_code == 400
    assert "runs past the end" in cut.json()["error"]

    image = {"name": "images", "shape": [1], "datatype": "BYTES"}
    good = base64.b64encode(_images()[0]).decode()
    for data, status in [(good, 200), ("not*base64", 400)]:
        answer = httpx.post(
            f"{server}/v2/models/cifar10/infer",
            json={"inputs": [{**image, "parameters": {"content_type": "base64"}, "data": [data]}]},
        )
        assert answer.status_code == status, answer.text
    assert answer.json() == {"error": "input 'images': element 0 is not valid base64"}


def test_truncated_raw_contents_over_grpc_are_invalid_argument(
    grpc: grpcclient.InferenceServerClient,
) -> None:
    features = grpcclient.InferInput("features", [2, 15], "FP32")
    features.set_data_from_numpy(np.zeros((2, 15), np.float32))
    features._raw_content = features._raw_content[:-8]  # as a broken client would send it
    with pytest.raises(InferenceServerException) as failure:
        grpc.infer("fraud", [features])
    assert failure.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "112 bytes of data; shape [2, 15] of FP32 takes 120" in failure.value.message()
    assert grpc.is_server_ready()


def test_grpc_refuses_what_it_does_not_offer_cleanly(
    server: RunningServer, grpc: grpcclient.InferenceServerClient
) -> None:
    channel = grpc_module.insecure_channel(server.grpc_target)
    garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc_module.RpcError) as failure:
        garbage(b"\xff\xff\xff")
    assert failure.value.code() == grpc_module.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in failure.value.details()
    channel.close()

    with pytest.raises(InferenceServerException) as unoffered:
        grpc.get_inference_statistics("fraud")
    assert unoffered.value.status() == "StatusCode.UNIMPLEMENTED"
    shared = grpcclient.InferInput("features", [1, 15], "FP32")
    shared.set_shared_memory("region", 60)
    with pytest.raises(InferenceServerException, match="shared memory is not supported"):
        grpc.infer("fraud", [shared])
    with pytest.raises(InferenceServerException, match="load takes no parameters"):
        grpc.load_model("fraud", config="{}")
    assert "Traceback" not in server.output()


def test_grpc_calls_are_counted_in_the_metrics(
    server: RunningServer, grpc: grpcclient.InferenceServerClient
) -> None:
    features = grpcclient.InferInput("features", [1, 15], "FP32")
    features.set_data_from_numpy(np.zeros((1, 15), np.float32))
    grpc.infer("fraud", [features])
    metrics = httpx.get(f"{server}/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("deepserve_requests_total{")
        and 'route="/inference.GRPCInferenceService/ModelInfer"' in line
        and 'status="200"' in line
    )
    assert 'model="fraud"' in line and float(line.rsplit(" ", 1)[1]) >= 1
