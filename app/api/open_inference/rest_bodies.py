"""The bodies of the protocol's REST infer route: the request (JSON, or JSON then binary
tensor data, perhaps compressed) and the answer (likewise)."""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import msgspec
from starlette.responses import Response

from app.api.open_inference.operations import InferAnswer
from app.api.responses import json_response
from app.codecs.open_inference import InferRequest, RequestedOutput, classification_of
from app.codecs.tensors import BYTES, from_json, from_raw, to_json_data, to_raw
from app.errors import InvalidInput, PayloadTooLarge

HEADER_LENGTH = "inference-header-content-length"
# What `Content-Encoding` may say (Triton's clients compress with gzip or deflate).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


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


class _Parameters(msgspec.Struct):
    parameters: dict[str, Any] = {}


class _RepositoryIndexRequest(msgspec.Struct):
    ready: bool = False


_decode_request = msgspec.json.Decoder(_WireRequest).decode
_decode_parameters = msgspec.json.Decoder(_Parameters).decode
_decode_index = msgspec.json.Decoder(_RepositoryIndexRequest).decode


def decompressed(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before `Content-Encoding`, refused past `limit` bytes."""
    if not encoding or encoding == "identity":
        return body
    wbits = _WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise InvalidInput(f"Content-Encoding {encoding!r} is not accepted; use gzip or deflate")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"the body is not valid {encoding}: {exc}") from None
    if len(plain) > limit:
        raise PayloadTooLarge(f"the body exceeds the limit of {limit} bytes once decompressed")
    return plain


def parse_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """An infer request from its body: JSON, or JSON then binary tensor data."""
    binary = memoryview(body)[0:0]
    if header_length is not None:
        if not _is_digits(header_length) or int(header_length) > len(body):
            raise InvalidInput(
                f"Inference-Header-Content-Length {header_length!r} must be a number of bytes "
                f"up to the body's {len(body)}"
            )
        split = int(header_length)
        binary = memoryview(body)[split:]
        body = body[:split]
    wire = _decoded(_decode_request, body, "infer request")
    inputs, offset = [], 0
    for item in wire.inputs:
        if "shared_memory_region" in item.parameters:
            raise InvalidInput(f"input {item.name!r}: shared memory is not supported")
        size = item.parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
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
        elif item.parameters.get("content_type") == "base64" and item.datatype == BYTES:
            inputs.append(from_json(item.name, BYTES, item.shape, _unbase64(item)))
        else:
            inputs.append(from_json(item.name, item.datatype, item.shape, item.data))
    if offset != len(binary):
        raise InvalidInput(
            f"{len(binary) - offset} bytes of binary data follow the inputs' binary_data_size"
        )
    return InferRequest(
        inputs=inputs,
        outputs=[_requested(o) for o in wire.outputs] if wire.outputs else None,
        id=wire.id,
        binary_output=_flag(wire.parameters, "binary_data_output", "request"),
    )


def parse_parameters(body: bytes) -> dict[str, Any]:
    """The `parameters` of a repository load or unload body; an empty body has none."""
    return _decoded(_decode_parameters, body, "request").parameters if body.strip() else {}


def parse_ready_only(body: bytes) -> bool:
    """The `ready` flag of a repository index body; an empty body lists every version."""
    return (
        _decoded(_decode_index, body, "repository index request").ready if body.strip() else False
    )


def _decoded(decode: Any, body: bytes, what: str) -> Any:
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid {what}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"the {what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidInput(f"the {what} is nested too deeply") from None


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
    if classification is not None:
        classification = classification_of(output.name, classification)
    return RequestedOutput(output.name, binary, classification)


def _flag(parameters: dict[str, Any], name: str, where: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{where}: parameter {name} must be true or false")
    return value


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def infer_response(answer: InferAnswer) -> Response:
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
    response = Response(b"".join([head, *raws]), media_type="application/octet-stream")
    response.raw_headers.append((b"inference-header-content-length", b"%d" % len(head)))
    return response
