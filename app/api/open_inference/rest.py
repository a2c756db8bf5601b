"""The Open Inference Protocol over REST (`/v2`): the required API, and the binary tensor
data, model repository, classification and model configuration extensions. BYTES inputs
may also come in JSON as base64 (`"parameters": {"content_type": "base64"}`).

Every route is an entry of the endpoint table, so key checks, deadlines, drain, logs and
metrics are those of `/v1`; errors are the protocol's `{"error": "message"}`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec
from pydantic import BaseModel
from starlette.responses import Response

from app.api.bodies import read_body
from app.api.endpoints import Access, Endpoint, EndpointCall
from app.api.errors import OPEN_INFERENCE_ERRORS
from app.api.open_inference import operations
from app.api.responses import json_response
from app.codecs.open_inference import InferRequest, RequestedOutput
from app.codecs.tensors import from_json, from_raw, to_json_data, to_raw
from app.errors import InvalidInput

HEADER_LENGTH = "inference-header-content-length"


class _WireInput(msgspec.Struct):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = {}
    data: Any = msgspec.UNSET


class _WireOutput(msgspec.Struct):
    name: str
    parameters: dict[str, Any] = {}


class _WireRequest(msgspec.Struct):
    inputs: list[_WireInput]
    id: str | None = None
    parameters: dict[str, Any] = {}
    outputs: list[_WireOutput] | None = None


class _RepositoryIndexRequest(msgspec.Struct):
    ready: bool = False


_decode_request = msgspec.json.Decoder(_WireRequest).decode
_decode_index = msgspec.json.Decoder(_RepositoryIndexRequest).decode


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request from its body: JSON, or JSON then binary tensor data."""
    binary = memoryview(body)[0:0]
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} must be a number of bytes "
                f"up to the body's {len(body)}"
            )
        split = int(header_length)
        binary = memoryview(body)[split:]
        body = body[:split]
    try:
        wire = _decode_request(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid infer request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the infer request is not valid JSON: {exc}") from None
    inputs, offset = [], 0
    for item in wire.inputs:
        if "shared_memory_region" in item.parameters:
            raise InvalidInput(f"input {item.name!r}: shared memory is not supported")
        size = item.parameters.get("binary_data_size")
        if size is not None:
            if not _is_count(size):
                raise InvalidInput(f"input {item.name!r}: binary_data_size must be a count")
            if offset + size > len(binary):
                raise InvalidInput(
                    f"input {item.name!r}: binary_data_size {size} runs past the end of the "
                    f"body's {len(binary)} bytes of binary data"
                )
            raw = binary[offset : offset + size]
            offset += size
            inputs.append(from_raw(item.name, item.datatype, item.shape, raw))
        elif item.data is msgspec.UNSET:
            raise InvalidInput(f"input {item.name!r} has neither data nor binary_data_size")
        elif item.parameters.get("content_type") == "base64" and item.datatype == "BYTES":
            inputs.append(from_json(item.name, "BYTES", item.shape, _unbase64(item)))
        else:
            inputs.append(from_json(item.name, item.datatype, item.shape, item.data))
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size"
        )
    return InferRequest(
        inputs=inputs,
        outputs=None if wire.outputs is None else [_requested(o) for o in wire.outputs],
        id=wire.id,
        binary_output=_flag(wire.parameters, "binary_data_output", "request"),
    )


def _unbase64(item: _WireInput) -> list[bytes]:
    """BYTES elements sent in JSON as base64 (`"content_type": "base64"`, as MLServer
    reads it): how an image travels in a JSON request."""
    data = item.data if isinstance(item.data, list) else [item.data]
    elements = []
    for index, element in enumerate(data):
        if isinstance(element, list) and len(element) == 1:  # nested as [N, 1]
            element = element[0]
        try:
            elements.append(base64.b64decode(element, validate=True))
        except (binascii.Error, TypeError, ValueError):
            raise InvalidInput(
                f"input {item.name!r}: element {index} is not valid base64"
            ) from None
    return elements


def _requested(output: _WireOutput) -> RequestedOutput:
    parameters = output.parameters
    binary = None
    if "binary_data" in parameters:
        binary = _flag(parameters, "binary_data", f"output {output.name!r}")
    classification = parameters.get("classification")
    if classification is not None and not _is_count(classification):
        raise InvalidInput(f"output {output.name!r}: classification must be a count")
    return RequestedOutput(output.name, binary, classification)


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {name} must be true or false")
    return value


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def infer_response(answer: operations.InferAnswer) -> Response:
    """JSON, or with binary outputs the JSON header followed by their raw bytes."""
    header: dict[str, Any] = {
        "model_name": answer.model_name,
        "model_version": answer.model_version,
    }
    if answer.id is not None:
        header["id"] = answer.id
    outputs, raws = [], []
    for tensor, binary in answer.outputs:
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            raw = to_raw(tensor)
            output["parameters"] = {"binary_data_size": len(raw)}
            raws.append(raw)
        else:
            output["data"] = to_json_data(tensor)
        outputs.append(output)
    header["outputs"] = outputs
    if not raws:
        return json_response(header)
    head = msgspec.json.encode(header)
    return Response(
        b"".join([head, *raws]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


# Handlers: each answers one route of the protocol.


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
    settings = call.services.settings
    request = call.request

    async def read() -> InferRequest:
        body = await read_body(request, settings.max_body_bytes)
        return parse_infer_request(body, request.headers.get(HEADER_LENGTH))

    answer = await operations.infer(call.services, call.inference(), read)
    return infer_response(answer)


async def repository_index(call: EndpointCall) -> Response:
    body = await read_body(call.request, call.services.settings.max_body_bytes)
    try:
        ready_only = _decode_index(body).ready if body.strip() else False
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise InvalidInput(f"invalid repository index request: {exc}") from None
    return json_response(operations.repository_index(call.services, ready_only))


async def repository_load(call: EndpointCall) -> Response:
    assert call.model is not None
    await operations.load(call.services, call.model)
    return json_response({})


async def repository_unload(call: EndpointCall) -> Response:
    assert call.model is not None
    await operations.unload(call.services, call.model)
    return json_response({})


# What the OpenAPI document says of the bodies and answers.


class TensorData(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutputSchema(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequestSchema(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[TensorData]
    outputs: list[RequestedOutputSchema] | None = None


class InferResponseSchema(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[TensorData]


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadataSchema(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataSchema]
    outputs: list[TensorMetadataSchema]


INFER_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferRequestSchema"}},
        "application/octet-stream": {
            "schema": {
                "type": "string",
                "format": "binary",
                "description": "The JSON request (its length in the "
                "Inference-Header-Content-Length header), then the inputs' binary data.",
            }
        },
    },
}
INDEX_BODY: dict[str, Any] = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
        }
    },
}


def _endpoint(
    method: str,
    path: str,
    handler: Any,
    summary: str,
    response_model: type[BaseModel] | None = None,
    request_body: dict[str, Any] | None = None,
    access: Access = "key",
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
        schemas=(InferRequestSchema,) if request_body is INFER_BODY else (),
        about_model="{model}" in path,
        access=access,
        errors=OPEN_INFERENCE_ERRORS,
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
