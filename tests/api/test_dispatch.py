"""The endpoint table: the only routing of inference requests, and what OpenAPI documents."""

from __future__ import annotations

import pytest

from app.api.endpoints import Endpoint, EndpointTable
from app.api.inference import ENDPOINTS, IMAGE_BODY, ClassifyResponse, classify
from tests.conftest import encoded_image, transaction


def test_every_endpoint_of_the_table_is_documented_and_nothing_else_is(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for endpoint in ENDPOINTS:
        operation = paths[endpoint.path][endpoint.method.lower()]
        assert operation["summary"] == endpoint.summary
        documented = {p["name"] for p in operation["parameters"] if p["in"] == "query"}
        assert documented == {q.name for q in endpoint.query}
    inference = {path for path in paths if path.endswith(("/classify", "/score"))}
    assert inference == {endpoint.path for endpoint in ENDPOINTS}


def test_the_table_routes_each_endpoint_to_its_model(client) -> None:
    image = {"content": encoded_image((200, 0, 0)), "headers": {"content-type": "image/png"}}
    assert client.post("/v1/classify", **image).json()["model"] == "tiny-image"
    assert client.post("/v1/models/tiny-image/classify", **image).json()["model"] == "tiny-image"
    assert client.post("/v1/fraud/score", json=transaction()).json()["model"] == "tiny-fraud"
    scored = client.post("/v1/models/tiny-fraud/score", json=transaction())
    assert scored.json()["model"] == "tiny-fraud"


def test_another_method_on_an_endpoint_is_405_naming_the_allowed_one(client) -> None:
    response = client.put("/v1/models/tiny-fraud/score", json=transaction())
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_an_empty_model_segment_matches_no_endpoint(client) -> None:
    response = client.post("/v1/models//score", json=transaction())
    assert response.status_code == 404


def test_a_table_refuses_an_endpoint_declared_twice_or_without_a_model() -> None:
    with pytest.raises(ValueError, match="twice"):
        EndpointTable([*ENDPOINTS, ENDPOINTS[0]])
    with pytest.raises(ValueError, match="model"):
        Endpoint("POST", "/v1/nowhere", classify, "none", ClassifyResponse, IMAGE_BODY)


def test_a_trailing_slash_is_redirected_to_the_endpoint(client) -> None:
    response = client.post("/v1/fraud/score/?version=1", json=transaction(), follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].endswith("/v1/fraud/score?version=1")


def test_a_405_is_counted_under_the_route_template_not_the_raw_path(client) -> None:
    for name in ("m0", "m1"):
        assert client.get(f"/v1/models/{name}/score").status_code == 405
    metrics = client.get("/metrics").text
    assert 'route="/v1/models/{model}/score"' in metrics
    assert "/v1/models/m0/score" not in metrics


def test_operations_keep_the_ids_fastapi_gave_them(client) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    expected = {
        "/v1/classify": "classify_default_v1_classify_post",
        "/v1/models/{model}/classify": "classify_v1_models__model__classify_post",
        "/v1/fraud/score": "score_default_v1_fraud_score_post",
        "/v1/models/{model}/score": "score_v1_models__model__score_post",
    }
    assert {path: paths[path]["post"]["operationId"] for path in expected} == expected
