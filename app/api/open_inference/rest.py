"""The Open Inference Protocol over REST (`/v2`): the required API, and the binary tensor
data, model repository, classification and model configuration extensions. BYTES inputs
may also come in JSON as base64 (`"parameters": {"content_type": "base64"}`).

Every route is an entry of the endpoint table, so key checks, deadlines, drain, logs and
metrics are those of `/v1`; errors are the protocol's `{"error": "message"}`
(`app.api.errors`).
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from starlette.responses import Response

from app.api.bodies import read_body
from app.api.endpoints import Access, Endpoint, EndpointCall, Handler
from app.api.open_inference import operations
from app.api.open_inference.rest_bodies import (
    HEADER_LENGTH,
    decompressed,
    infer_response,
    parse_infer_request,
    parse_parameters,
    parse_ready_only,
)
from app.api.open_inference.schemas import (
    INDEX_BODY,
    INFER_BODY,
    InferRequestSchema,
    InferResponseSchema,
    ModelMetadataResponse,
    ServerMetadataResponse,
)
from app.api.responses import json_response
from app.codecs.open_inference import InferRequest

# Bodies larger than this are parsed in a thread, not on the event loop.
PARSE_INLINE_BYTES = 256 * 1024


async def server_metadata(call: EndpointCall) -> Response:
    return json_response(operations.server_metadata())


async def server_live(call: EndpointCall) -> Response:
    return json_response({"live": True})


async def server_ready(call: EndpointCall) -> Response:
    problems = operations.server_not_ready(call.services)
    if problems:
        return json_response({"ready": False, "not_ready": problems}, 503, {"Retry-After": "1"})
    return json_response({"ready": True})


async def model_metadata(call: EndpointCall) -> Response:
    assert call.model is not None
    return json_response(operations.metadata(call.services, call.model, call.version()))


async def model_config(call: EndpointCall) -> Response:
    assert call.model is not None
    return json_response(operations.config(call.services, call.model, call.version()))


async def model_ready(call: EndpointCall) -> Response:
    """200 when the model (version) serves; otherwise the error says why (404, 503)."""
    assert call.model is not None
    operations.served_card(call.services, call.model, call.version())
    return json_response({"name": call.model, "ready": True})


async def infer(call: EndpointCall) -> Response:
    limit = call.services.settings.max_body_bytes
    request = call.request
    headers = request.headers

    async def read() -> InferRequest:
        body = await read_body(request, limit)
        body = decompressed(body, headers.get("content-encoding"), limit)
        header_length = headers.get(HEADER_LENGTH)
        if len(body) <= PARSE_INLINE_BYTES:
            return parse_infer_request(body, header_length)
        return await asyncio.to_thread(parse_infer_request, body, header_length)

    answer = await operations.infer(call.services, call.inference(), read)
    return infer_response(answer)


async def repository_index(call: EndpointCall) -> Response:
    body = await read_body(call.request, call.services.settings.max_body_bytes)
    return json_response(operations.repository_index(call.services, parse_ready_only(body)))


async def repository_load(call: EndpointCall) -> Response:
    assert call.model is not None
    body = await read_body(call.request, call.services.settings.max_body_bytes)
    await operations.load(call.services, call.model, parse_parameters(body))
    return json_response({})


async def repository_unload(call: EndpointCall) -> Response:
    assert call.model is not None
    await operations.unload(call.services, call.model)
    return json_response({})


def _endpoint(
    method: str,
    path: str,
    handler: Handler,
    summary: str,
    response_model: type[BaseModel] | None = None,
    request_body: dict[str, object] | None = None,
    access: Access = "client",
    name: str = "",
) -> Endpoint:
    return Endpoint(
        method,
        path,
        handler,
        summary,
        response_model,
        request_body,
        tags=("open inference protocol",),
        name=name,
        access=access,
        schemas=(InferRequestSchema,) if request_body is INFER_BODY else (),
        about_model="{model}" in path,
    )


_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"

ENDPOINTS = [
    _endpoint("GET", "/v2", server_metadata, "Server metadata", ServerMetadataResponse),
    _endpoint("GET", "/v2/health/live", server_live, "Server liveness", access="probe"),
    _endpoint("GET", "/v2/health/ready", server_ready, "Server readiness", access="probe"),
    _endpoint("GET", _MODEL, model_metadata, "Model metadata", ModelMetadataResponse),
    _endpoint(
        "GET",
        _VERSION,
        model_metadata,
        "Model version metadata",
        ModelMetadataResponse,
        name="model_version_metadata",
    ),
    _endpoint("GET", f"{_MODEL}/ready", model_ready, "Model readiness"),
    _endpoint(
        "GET",
        f"{_VERSION}/ready",
        model_ready,
        "Model version readiness",
        name="model_version_ready",
    ),
    _endpoint("GET", f"{_MODEL}/config", model_config, "Model configuration (Triton's form)"),
    _endpoint(
        "GET",
        f"{_VERSION}/config",
        model_config,
        "Model version configuration",
        name="model_version_config",
    ),
    _endpoint("POST", f"{_MODEL}/infer", infer, "Inference", InferResponseSchema, INFER_BODY),
    _endpoint(
        "POST",
        f"{_VERSION}/infer",
        infer,
        "Inference on one version",
        InferResponseSchema,
        INFER_BODY,
        name="infer_version",
    ),
    _endpoint(
        "POST",
        "/v2/repository/index",
        repository_index,
        "Models in the repository",
        request_body=INDEX_BODY,
        access="admin",
    ),
    _endpoint(
        "POST",
        "/v2/repository/models/{model}/load",
        repository_load,
        "Load a model's versions",
        access="admin",
    ),
    _endpoint(
        "POST",
        "/v2/repository/models/{model}/unload",
        repository_unload,
        "Unload every version of a model",
        access="admin",
    ),
]
