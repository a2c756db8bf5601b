"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, as Triton and
KServe define it, on the operations the REST routes use.

Each call goes through `_rpc`: key check, drain, deadline, errors as gRPC status codes,
and one log line and metric per call as HTTP requests have. Calls the service does not
offer (shared memory, tracing, statistics, streaming) answer UNIMPLEMENTED.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import orjson
from google.protobuf import json_format

from app import errors
from app.api.auth import check_key
from app.api.endpoints import Access
from app.api.errors import status_for
from app.api.open_inference import operations
from app.api.open_inference.stubs import grpc_service_pb2 as pb
from app.api.open_inference.stubs import grpc_service_pb2_grpc as pb_grpc
from app.api.open_inference.stubs import model_config_pb2
from app.api.services import Services
from app.codecs.open_inference import InferRequest, RequestedOutput
from app.codecs.tensors import NUMPY_BY_DATATYPE, check_datatype, from_json, from_raw, to_raw
from app.serving.data_plane import InferenceCall, RequestReport

logger = logging.getLogger("deepserve.requests")

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

Method = Callable[..., Awaitable[Any]]


class _Report:
    """What one call tells its log line and metrics."""

    def __init__(self) -> None:
        self.status = 200
        self.inference = RequestReport()


def _rpc(access: Access) -> Callable[[Method], Method]:
    """Wrap a servicer method with what every call shares."""

    def wrap(method: Method) -> Method:
        route = f"/inference.GRPCInferenceService/{method.__name__}"

        @functools.wraps(method)
        async def call(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            services = self.services
            started = time.perf_counter()
            report = _Report()
            drain = services.drain
            counted = access != "probe"
            if counted:
                drain.enter()
            try:
                if counted and drain.draining:
                    raise errors.ShuttingDown("the server is shutting down")
                settings = services.settings
                if access != "probe" or settings.auth_probes_and_metrics:
                    check_key(_metadata(context), settings.api_keys, admin=access == "admin")
                return await method(self, request, context, report)
            except errors.ServingError as exc:
                report.status = status_for(exc)
                if isinstance(exc, errors.Overloaded):
                    await services.refusals.pace()
                code = CODE_BY_STATUS.get(report.status, grpc.StatusCode.INTERNAL)
                await context.abort(code, exc.message)
            except grpc.aio.AbortError:
                raise
            except asyncio.CancelledError:  # the client cancelled, or its deadline passed
                report.status = 499
                raise
            except Exception:
                report.status = 500
                logger.error("unhandled error on %s", route, exc_info=True)
                await context.abort(grpc.StatusCode.INTERNAL, "internal server error")
            finally:
                if counted:
                    drain.leave()
                _observe(services, route, report, time.perf_counter() - started)

        return call  # type: ignore[return-value]

    return wrap


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata as headers: lower-case names, text values."""
    return {
        key.lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def _observe(services: Services, route: str, report: _Report, seconds: float) -> None:
    inference = report.inference
    version = "" if inference.version is None else str(inference.version)
    services.metrics.observe_request(route, inference.model or "", version, report.status, seconds)
    if logger.isEnabledFor(logging.INFO):
        record: dict[str, Any] = {
            "protocol": "grpc",
            "route": route,
            "status": report.status,
            "latency_ms": round(seconds * 1000, 3),
        }
        if inference.model is not None:
            record.update(model=inference.model, version=inference.version)
        if inference.items is not None:
            record["items"] = inference.items
        logger.info(orjson.dumps(record).decode())


def _version(model: str, raw: str) -> int | None:
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise errors.ModelNotFound(f"model {model!r} has no version {raw!r}")
    return int(raw)


class Servicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, services: Services) -> None:
        self.services = services

    @_rpc("probe")
    async def ServerLive(self, request: Any, context: Any, report: _Report) -> Any:
        return pb.ServerLiveResponse(live=True)

    @_rpc("probe")
    async def ServerReady(self, request: Any, context: Any, report: _Report) -> Any:
        return pb.ServerReadyResponse(ready=not operations.server_not_ready(self.services))

    @_rpc("key")
    async def ModelReady(self, request: Any, context: Any, report: _Report) -> Any:
        """Ready or not, as a boolean: an unknown or unloaded model is not ready (the REST
        route's 404 and 503 say the same)."""
        try:
            version = _version(request.name, request.version)
            operations.served_card(self.services, request.name, version)
        except (errors.ModelNotReady, errors.ModelNotFound):
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc("key")
    async def ServerMetadata(self, request: Any, context: Any, report: _Report) -> Any:
        return pb.ServerMetadataResponse(**operations.server_metadata())

    @_rpc("key")
    async def ModelMetadata(self, request: Any, context: Any, report: _Report) -> Any:
        version = _version(request.name, request.version)
        metadata = operations.metadata(self.services, request.name, version)
        return json_format.ParseDict(metadata, pb.ModelMetadataResponse())

    @_rpc("key")
    async def ModelConfig(self, request: Any, context: Any, report: _Report) -> Any:
        version = _version(request.name, request.version)
        config = operations.config(self.services, request.name, version)
        return pb.ModelConfigResponse(
            config=json_format.ParseDict(config, model_config_pb2.ModelConfig())
        )

    @_rpc("key")
    async def ModelInfer(self, request: Any, context: Any, report: _Report) -> Any:
        settings = self.services.settings
        remaining = context.time_remaining()
        timeout_s = settings.request_timeout_ms / 1000
        if remaining is not None:  # the client's gRPC deadline, within the server's limit
            timeout_s = min(remaining, settings.max_request_timeout_ms / 1000)
        call = InferenceCall(
            request.model_name,
            _version(request.model_name, request.model_version),
            time.monotonic() + timeout_s,
            report.inference,
        )

        async def read() -> InferRequest:
            return infer_request(request)

        answer = await operations.infer(self.services, call, read)
        return infer_response(answer)

    @_rpc("admin")
    async def RepositoryIndex(self, request: Any, context: Any, report: _Report) -> Any:
        index = operations.repository_index(self.services, request.ready)
        return pb.RepositoryIndexResponse(
            models=[pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in index]
        )

    @_rpc("admin")
    async def RepositoryModelLoad(self, request: Any, context: Any, report: _Report) -> Any:
        await operations.load(self.services, request.model_name)
        return pb.RepositoryModelLoadResponse()

    @_rpc("admin")
    async def RepositoryModelUnload(self, request: Any, context: Any, report: _Report) -> Any:
        await operations.unload(self.services, request.model_name)
        return pb.RepositoryModelUnloadResponse()


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
        shape = list(item.shape)
        if raw_contents:
            inputs.append(from_raw(item.name, item.datatype, shape, raw_contents[index]))
            continue
        check_datatype(item.name, item.datatype)
        values = list(getattr(item.contents, _CONTENTS_FIELD[item.datatype]))
        inputs.append(from_json(item.name, item.datatype, shape, values))
    outputs = [_requested(o) for o in request.outputs] or None
    return InferRequest(inputs=inputs, outputs=outputs, id=request.id or None)


def _requested(output: Any) -> RequestedOutput:
    classification = None
    if "classification" in output.parameters:
        parameter = output.parameters["classification"]
        if parameter.WhichOneof("parameter_choice") not in ("int64_param", "uint64_param"):
            raise errors.InvalidInput(f"output {output.name!r}: classification must be a count")
        classification = getattr(parameter, parameter.WhichOneof("parameter_choice"))
        if classification < 0:
            raise errors.InvalidInput(f"output {output.name!r}: classification must be a count")
    return RequestedOutput(output.name, None, classification)


def infer_response(answer: operations.InferAnswer) -> Any:
    """A `ModelInferResponse`, every output in `raw_output_contents` as Triton answers."""
    response = pb.ModelInferResponse(
        model_name=answer.model_name, model_version=answer.model_version, id=answer.id or ""
    )
    for tensor, _ in answer.outputs:
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(to_raw(tensor))
    return response


assert set(_CONTENTS_FIELD) == {*NUMPY_BY_DATATYPE, "BYTES"}
