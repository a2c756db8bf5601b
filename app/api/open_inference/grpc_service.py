"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, as Triton and
KServe define it, on the operations the REST routes use.

Methods are registered here, not through the generated servicer, so that every call goes
through `_Call`: the request decoded from its bytes (a malformed message is
INVALID_ARGUMENT, not an unhandled error), the key checked, the drain counted, errors
turned into status codes, and one log line and metric per call as for HTTP. Calls the
service does not offer (streaming, statistics, shared memory, tracing) are unregistered:
gRPC answers them UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from app import errors
from app.api.auth import Access, check_access
from app.api.errors import status_for
from app.api.open_inference import operations
from app.api.open_inference.stubs import grpc_service_pb2 as pb
from app.api.open_inference.stubs import model_config_pb2
from app.api.request_log import record_request, request_id_from
from app.api.services import Services
from app.codecs.open_inference import (
    InferRequest,
    RequestedOutput,
    classification_of,
    parse_version,
)
from app.codecs.tensors import NUMPY_BY_DATATYPE, check_datatype, from_json, from_raw, to_raw
from app.serving.data_plane import InferenceCall, RequestReport

logger = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"
CODE_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    499: grpc.StatusCode.CANCELLED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# Where the typed `contents` of a request keep each datatype's elements.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
assert set(_CONTENTS_FIELD) == {*NUMPY_BY_DATATYPE, "BYTES"}

Method = Callable[[Services, Any, grpc.aio.ServicerContext, RequestReport], Awaitable[Message]]


async def server_live(services: Services, request: Any, context: Any, report: Any) -> Message:
    return pb.ServerLiveResponse(live=True)


async def server_ready(services: Services, request: Any, context: Any, report: Any) -> Message:
    return pb.ServerReadyResponse(ready=not operations.server_not_ready(services))


async def model_ready(services: Services, request: Any, context: Any, report: Any) -> Message:
    """Ready or not, as a boolean: an unknown or unloaded model is not ready (the REST
    route's 404 and 503 say the same)."""
    try:
        version = parse_version(request.name, request.version)
        operations.served_card(services, request.name, version)
    except (errors.ModelNotReady, errors.ModelNotFound):
        return pb.ModelReadyResponse(ready=False)
    return pb.ModelReadyResponse(ready=True)


async def server_metadata(services: Services, request: Any, context: Any, report: Any) -> Message:
    return pb.ServerMetadataResponse(**operations.server_metadata())


async def model_metadata(services: Services, request: Any, context: Any, report: Any) -> Message:
    version = parse_version(request.name, request.version)
    metadata = operations.metadata(services, request.name, version)
    return json_format.ParseDict(metadata, pb.ModelMetadataResponse())


async def model_config(services: Services, request: Any, context: Any, report: Any) -> Message:
    version = parse_version(request.name, request.version)
    config = operations.config(services, request.name, version)
    return pb.ModelConfigResponse(
        config=json_format.ParseDict(config, model_config_pb2.ModelConfig())
    )


async def model_infer(
    services: Services, request: Any, context: grpc.aio.ServicerContext, report: RequestReport
) -> Message:
    settings = services.settings
    remaining = context.time_remaining()
    timeout_s = settings.request_timeout_ms / 1000
    if remaining is not None:  # the client's gRPC deadline, within the server's limit
        timeout_s = min(remaining, settings.max_request_timeout_ms / 1000)
    call = InferenceCall(
        request.model_name,
        parse_version(request.model_name, request.model_version),
        time.monotonic() + timeout_s,
        report,
    )

    async def read() -> InferRequest:
        return infer_request(request)

    return infer_response(await operations.infer(services, call, read))


async def repository_index(services: Services, request: Any, context: Any, report: Any) -> Message:
    index = operations.repository_index(services, request.ready)
    return pb.RepositoryIndexResponse(
        models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
    )


async def repository_load(services: Services, request: Any, context: Any, report: Any) -> Message:
    await operations.load(services, request.model_name, request.parameters.keys())
    return pb.RepositoryModelLoadResponse()


async def repository_unload(services: Services, request: Any, context: Any, report: Any) -> Message:
    await operations.unload(services, request.model_name)
    return pb.RepositoryModelUnloadResponse()


# Each offered call: its method, and who may call it when API keys are set.
METHODS: dict[str, tuple[Method, Access]] = {
    "ServerLive": (server_live, "probe"),
    "ServerReady": (server_ready, "probe"),
    "ModelReady": (model_ready, "client"),
    "ServerMetadata": (server_metadata, "client"),
    "ModelMetadata": (model_metadata, "client"),
    "ModelConfig": (model_config, "client"),
    "ModelInfer": (model_infer, "client"),
    "RepositoryIndex": (repository_index, "admin"),
    "RepositoryModelLoad": (repository_load, "admin"),
    "RepositoryModelUnload": (repository_unload, "admin"),
}


class _Call:
    """One registered method with what every call shares."""

    def __init__(self, services: Services, name: str, method: Method, access: Access) -> None:
        descriptor = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[name]
        self.request_type: type[Message] = getattr(pb, descriptor.input_type.name)
        self.services = services
        self.route = f"/{SERVICE}/{name}"
        self.method = method
        self.access = access

    async def handle(self, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        services = self.services
        started = time.perf_counter()
        report = RequestReport()
        status = 200
        metadata = {
            key.lower(): value
            for key, value in (context.invocation_metadata() or ())
            if isinstance(value, str)
        }
        request_id = request_id_from(metadata.get("x-request-id"))
        context.set_trailing_metadata((("x-request-id", request_id),))
        counted = self.access != "probe"  # probes answer while draining, as over HTTP
        if counted:
            services.drain.enter()
        try:
            if counted and services.drain.draining:
                raise errors.ShuttingDown("the server is shutting down")
            check_access(metadata, services.settings, self.access)
            try:
                request = self.request_type.FromString(raw)
            except DecodeError:
                raise errors.InvalidInput(
                    f"the message is not a valid {self.request_type.__name__}"
                ) from None
            return await self.method(services, request, context, report)
        except errors.ServingError as exc:
            status = status_for(exc)
            if isinstance(exc, errors.Overloaded):
                await services.refusals.pace()
            await context.abort(CODE_BY_STATUS.get(status, grpc.StatusCode.INTERNAL), exc.message)
            raise  # not reached: abort raises
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            status = 499
            raise
        except Exception:
            status = 500
            logger.error("unhandled error on %s", self.route, exc_info=True)
            await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            raise
        finally:
            if counted:
                services.drain.leave()
            seconds = time.perf_counter() - started
            record_request(
                services.metrics, request_id, "gRPC", self.route, status, seconds, report
            )


def service_handler(services: Services) -> grpc.GenericRpcHandler:
    """The service's calls, each taking the request's bytes and answering a message."""
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _Call(
                services, name, method, access
            ).handle,  # a coroutine function: grpc.aio awaits it
            request_deserializer=None,  # bytes: decoded inside the call, errors answered
            response_serializer=lambda message: message.SerializeToString(),
        )
        for name, (method, access) in METHODS.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE, handlers)


def infer_request(request: Any) -> InferRequest:
    """A `ModelInferRequest` as the protocol-neutral request: raw contents where the client
    sent them (as Triton's clients do), else the typed contents."""
    raw_contents = request.raw_input_contents
    if raw_contents and len(raw_contents) != len(request.inputs):
        raise errors.InvalidInput(
            f"{len(request.inputs)} inputs but {len(raw_contents)} raw_input_contents; "
            "send one per input, or none"
        )
    inputs = []
    for index, item in enumerate(request.inputs):
        if "shared_memory_region" in item.parameters:
            raise errors.InvalidInput(f"input {item.name!r}: shared memory is not supported")
        shape = list(item.shape)
        if raw_contents:
            if item.HasField("contents"):
                raise errors.InvalidInput(
                    f"input {item.name!r}: send raw_input_contents or contents, not both"
                )
            inputs.append(from_raw(item.name, item.datatype, shape, raw_contents[index]))
            continue
        check_datatype(item.name, item.datatype)
        values = list(getattr(item.contents, _CONTENTS_FIELD[item.datatype]))
        inputs.append(from_json(item.name, item.datatype, shape, values))
    outputs = [_requested(output) for output in request.outputs]
    return InferRequest(inputs=inputs, outputs=outputs or None, id=request.id or None)


def _requested(output: Any) -> RequestedOutput:
    classification = None
    if "classification" in output.parameters:
        parameter = output.parameters["classification"]
        choice = parameter.WhichOneof("parameter_choice")
        value = getattr(parameter, choice) if choice in ("int64_param", "uint64_param") else None
        classification = classification_of(output.name, value)
    return RequestedOutput(output.name, None, classification)


def infer_response(answer: operations.InferAnswer) -> Message:
    """A `ModelInferResponse`, every output in `raw_output_contents` as Triton answers."""
    response = pb.ModelInferResponse(
        model_name=answer.model_name, model_version=answer.model_version, id=answer.id or ""
    )
    for tensor, _ in answer.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_raw(tensor))
    return response
