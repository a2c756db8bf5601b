"""What the OpenAPI document says of the protocol's REST bodies and answers. Requests are
parsed by `rest_bodies`, not by these models: they describe, they do not validate."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


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
