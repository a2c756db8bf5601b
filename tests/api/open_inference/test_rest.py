"""The protocol's REST details that clients rely on, on the real app with its lifespan:
binary bodies both ways, the error shape, readiness bodies, and the OpenAPI document."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import orjson
from fastapi.testclient import TestClient

from app.api.services import services_of
from tests import model_factory
from tests.conftest import ClientFactory, encoded_image

FEATURES = {"name": "features", "shape": [2, 15], "datatype": "FP32"}
ROWS = np.arange(30, dtype=np.float32).reshape(2, 15) / 30


def _binary_body(header: dict[str, object], *raws: bytes) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    return head + b"".join(raws), {"Inference-Header-Content-Length": str(len(head))}


def test_binary_in_binary_out_equals_json_in_json_out(client: TestClient) -> None:
    as_json = client.post(
        "/v2/models/tiny-fraud/infer", json={"inputs": [{**FEATURES, "data": ROWS.tolist()}]}
    )
    assert as_json.status_code == 200
    expected = as_json.json()["outputs"][0]["data"]

    raw = ROWS.tobytes()
    header = {
        "inputs": [{**FEATURES, "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }
    body, headers = _binary_body(header, raw)
    answer = client.post("/v2/models/tiny-fraud/infer", content=body, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/octet-stream"
    length = int(answer.headers["inference-header-content-length"])
    head = orjson.loads(answer.content[:length])
    (output,) = head["outputs"]
    assert output["parameters"] == {"binary_data_size": 8} and "data" not in output
    values = np.frombuffer(answer.content[length:], np.float32)
    np.testing.assert_array_equal(values, np.array(expected, np.float32))


def test_images_as_binary_bytes_elements(client: TestClient) -> None:
    images = [encoded_image("red"), encoded_image("blue", fmt="JPEG")]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = {
        "inputs": [{"name": "images", "shape": [2, 1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(raw)}}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }  # fmt: skip
    body, headers = _binary_body(header, raw)
    answer = client.post("/v2/models/tiny-image/infer", content=body, headers=headers)
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["shape"] == [2, 1]
    assert [e.rsplit(":", 1)[1] for e in output["data"]] == ["red", "blue"]


def test_errors_are_the_protocols_shape_and_statuses(client: TestClient) -> None:
    cases = [
        ("/v2/models/nope/infer", b"{}", {}, 404, "no model named 'nope'"),
        ("/v2/models/tiny-fraud/versions/7/infer", b"{}", {}, 404, "no version 7"),
        ("/v2/models/tiny-fraud/versions/x/infer", b"{}", {}, 404, "no version 'x'"),
        ("/v2/models/tiny-fraud/infer", b"{", {}, 400, "not valid JSON"),
        ("/v2/models/tiny-fraud/infer", b'{"inputs": 3}', {}, 400, "Expected `array`"),
        ("/v2/models/tiny-fraud/infer", b"{}", {}, 400, "missing required field `inputs`"),
        ("/v2/models/tiny-fraud/infer", b'{"inputs": []}', {}, 400, "takes one input"),
        ("/v2/models/tiny-image/infer", b'{"inputs": []}', {}, 400, "'pixels' or 'images'"),
        ("/v2/models/tiny-fraud/infer", b"{}", {"Inference-Header-Content-Length": "9"}, 400,
         "up to the body's 2"),
    ]  # fmt: skip
    for path, body, headers, status, message in cases:
        answer = client.post(path, content=body, headers=headers)
        assert answer.status_code == status, (path, body, answer.text)
        error = answer.json()["error"]
        assert isinstance(error, str) and message in error, (message, error)
    wrong_method = client.get("/v2/models/tiny-fraud/infer")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert isinstance(wrong_method.json()["error"], str)


def test_input_that_could_have_crashed_is_a_400(client: TestClient) -> None:
    nan = ROWS.copy()
    nan[1, 4] = np.nan
    header = {"inputs": [{**FEATURES, "parameters": {"binary_data_size": nan.nbytes}}]}
    body, headers = _binary_body(header, nan.tobytes())
    deep = b'{"inputs": [{"name": "features", "shape": [1], "datatype": "FP32", "data": '
    deep += b"[" * 5000 + b"1" + b"]" * 5000 + b"}]}"
    cases = [
        (b'{"inputs": [{"name": "features", "shape": [1, 15], "datatype": "FP32", "data": '
         b"[null, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}", {}, "FP32 numbers"),
        (b'{"inputs": [{"name": "features", "shape": [1, 15], "datatype": "FP32", "data": '
         b"[1e300, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}]}", {}, "must be finite"),
        (body, headers, "must be finite"),
        (deep, {}, "nested too deeply"),
        (b"{}", {"Inference-Header-Content-Length": b"\xb2"},
         "must be a number of bytes"),
        (b"{}", {"Content-Encoding": "br"}, "Content-Encoding 'br' is not accepted"),
        (b"{}", {"Content-Encoding": "gzip"}, "not valid gzip"),
    ]  # fmt: skip
    for content, extra, message in cases:
        answer = client.post("/v2/models/tiny-fraud/infer", content=content, headers=extra)
        assert answer.status_code == 400, (message, answer.text)
        assert message in answer.json()["error"]
    odd_version = client.get("/v2/models/tiny-fraud/versions/%C2%B2")
    assert odd_version.status_code == 404
    assert odd_version.json() == {"error": "model 'tiny-fraud' has no version '\u00b2'"}


def test_a_gzip_body_is_read_and_no_outputs_listed_means_all(client: TestClient) -> None:
    body = orjson.dumps({"inputs": [{**FEATURES, "data": ROWS.tolist()}], "outputs": []})
    answer = client.post(
        "/v2/models/tiny-fraud/infer",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip"},
    )
    assert answer.status_code == 200, answer.text
    assert [o["name"] for o in answer.json()["outputs"]] == ["fraud_probability"]


def test_unknown_v2_routes_and_refusals_while_draining_are_the_protocols_shape(
    client: TestClient,
) -> None:
    unknown = client.get("/v2/models/tiny-fraud/stats")
    assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)
    services_of(client.app).drain.start()  # type: ignore[arg-type]
    refused = client.post("/v2/models/tiny-fraud/infer", json={"inputs": []})
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "the server is shutting down"}
    assert client.get("/v2/health/ready").json()["ready"] is False
    assert client.get("/v2/health/live").status_code == 200


def test_leftover_binary_data_is_refused(client: TestClient) -> None:
    raw = ROWS.tobytes()
    header = {"inputs": [{**FEATURES, "parameters": {"binary_data_size": len(raw)}}]}
    body, headers = _binary_body(header, raw, b"extra")
    answer = client.post("/v2/models/tiny-fraud/infer", content=body, headers=headers)
    assert answer.status_code == 400
    assert answer.json() == {"error": "5 bytes of binary data follow the inputs' binary_data_size"}


def test_readiness_answers_with_a_body_while_a_model_loads(make_client: ClientFactory) -> None:
    client = make_client()
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/models/tiny-fraud/ready").json() == {"name": "tiny-fraud", "ready": True}
    assert client.post("/v2/repository/models/tiny-fraud/unload").status_code == 200
    assert client.get("/v2/models/tiny-fraud/ready").status_code == 404
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200  # an unloaded model is not a missing one
    index = client.post("/v2/repository/index", content=b"").json()
    assert {
        "name": "tiny-fraud",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "unloaded",
    } in index
    assert client.post("/v2/repository/index", json={"ready": True}).json() == [
        {"name": "tiny-image", "version": "1", "state": "READY"}
    ]
    overridden = client.post(
        "/v2/repository/models/tiny-fraud/load", json={"parameters": {"config": "{}"}}
    )
    assert overridden.status_code == 400 and "load takes no parameters" in overridden.text
    assert client.post("/v2/repository/models/tiny-fraud/load").status_code == 200
    assert client.get("/v2/models/tiny-fraud/ready").status_code == 200


def test_a_model_that_failed_to_load_is_not_ready(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    model_factory.fraud_model(tmp_path)
    (tmp_path / "tiny-fraud" / "1" / "model.onnx").write_bytes(b"not onnx")
    client = make_client(tmp_path)
    answer = client.get("/v2/models/tiny-fraud/ready")
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "ONNX Runtime could not load" in answer.json()["error"]
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 503 and ready.json()["ready"] is False
    index = client.post("/v2/repository/index").json()
    assert index[0]["state"] == "UNAVAILABLE" and "could not load" in index[0]["reason"]


def test_the_openapi_document_describes_v2(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v2", "/v2/models/{model}/infer", "/v2/repository/index"} <= set(paths)
    infer = paths["/v2/models/{model}/versions/{version}/infer"]["post"]
    assert set(infer["requestBody"]["content"]) == {"application/json", "application/octet-stream"}
