"""Inference endpoints: images to classify, transactions to score.

Routes do HTTP only: they read the body within limits and hand it to the data plane.
Bodies are parsed here rather than by FastAPI, which keeps the hot path short; the
`openapi_extra` blocks document them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from starlette.responses import Response

from app.batching import Admission
from app.deps import Deadline, SettingsDep
from app.errors import ClientGone
from app.inference import InferenceService
from app.request_bodies import parse_transactions, read_body, read_images, require_json
from app.request_log import request_details
from app.responses import json_response
from app.runtime import ModelRuntime
from app.settings import Settings
from app.transactions import ScoreResponse

router = APIRouter(prefix="/v1", tags=["inference"])

T = TypeVar("T")
# Watching for a hang-up costs a task per request (a few percent of the event loop with a
# CNN at c=64): worth it only where the answer is further away than this, which also
# bounds the model time an unwatched hang-up can waste.
WATCH_CLIENT_AFTER_S = 1.0

Version = Annotated[int | None, Query(ge=1, description="Model version; default: the highest.")]
TopK = Annotated[
    int | None,
    Query(ge=1, description="Labels per image, best first; default 5, or every label if fewer."),
]


class Prediction(BaseModel):
    label: str
    score: float


class ImageResult(BaseModel):
    predictions: list[Prediction]


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ImageResult]


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text}
    for status, text in {
        400: "Malformed body",
        404: "Unknown model or version",
        413: "Body, image or count too large",
        415: "Unsupported media type",
        422: "Invalid field",
        503: "Overloaded or not ready",
        504: "Deadline passed while queued",
    }.items()
}

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                    "required": ["file"],
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}

_TRANSACTION_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {"$ref": "#/components/schemas/Transaction"},
                        {"$ref": "#/components/schemas/TransactionBatch"},
                    ]
                }
            }
        },
    }
}


def _describe(request: Request, runtime: ModelRuntime) -> dict[str, object]:
    """Name the model in the request's log line and metrics; returns the details to extend."""
    details = request_details(request.scope)
    details.update(model=runtime.card.name, version=runtime.card.version)
    return details


def _admit_before_reading(runtime: ModelRuntime, deadline: float) -> Admission:
    """Admit the request, or refuse it, before its body is read and parsed: a refusal then
    costs little besides HTTP and leaves the CPU to the model, and an admitted request counts
    in the wait of those after it while it is read."""
    return runtime.batcher.admit(None, deadline)


async def _unless_client_leaves(
    request: Request, runtime: ModelRuntime, work: Coroutine[Any, Any, T]
) -> T:
    """Await `work`; if the client hangs up first, cancel it and raise `ClientGone`.

    Cancelled, a request's rows that are still queued leave the queue, and the model's time
    goes to clients that still wait (a client that timed out and retried would otherwise be
    served twice). The body is read by now, so the next ASGI message is the hang-up.
    """
    if runtime.batcher.expected_wait() < WATCH_CLIENT_AFTER_S:  # its own rows included
        return await work
    answer = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(request.receive())
    try:
        await asyncio.wait((answer, hangup), return_when=asyncio.FIRST_COMPLETED)
        if not answer.done() and hangup.result()["type"] == "http.disconnect":
            raise ClientGone("the client closed the connection before its answer was ready")
        return await answer
    finally:
        hangup.cancel()
        answer.cancel()


async def classify_images(
    request: Request, model: str, options: dict[str, int | None], deadline: float
) -> Response:
    """The classify endpoints; `options` holds `version` and `top_k` (None: the default)."""
    settings: Settings = request.app.state.settings
    inference: InferenceService = request.app.state.inference
    version = options.get("version")
    runtime = inference.image_model(model, version)
    details = _describe(request, runtime)
    admission = _admit_before_reading(runtime, deadline)
    try:
        images = await read_images(
            request, settings.max_body_bytes, settings.max_images_per_request
        )
        details["items"] = len(images)
        admission.count(len(images))
        work = inference.classify(
            runtime, images, options.get("top_k"), deadline, version is not None, admission
        )
        answer = await _unless_client_leaves(request, runtime, work)
    finally:
        admission.release()
    return json_response(answer)


async def score_transactions(
    request: Request, model: str, options: dict[str, int | None], deadline: float
) -> Response:
    """The score endpoints; `options` holds `version` (None: the highest ready)."""
    settings: Settings = request.app.state.settings
    inference: InferenceService = request.app.state.inference
    version = options.get("version")
    runtime = inference.fraud_model(model, version)
    details = _describe(request, runtime)
    admission = _admit_before_reading(runtime, deadline)
    try:
        require_json(request)
        body = await read_body(request, settings.max_body_bytes)
        transactions = parse_transactions(body, settings.max_transactions_per_request)
        details["items"] = len(transactions)
        admission.count(len(transactions))
        work = inference.score(runtime, transactions, deadline, version is not None, admission)
        answer = await _unless_client_leaves(request, runtime, work)
    finally:
        admission.release()
    return json_response(answer)


# The routes below declare the endpoints (OpenAPI, docs, validation of parameters);
# requests normally reach the handlers above through `app.fast_path` instead.


@router.post(
    "/models/{model}/classify",
    response_model=ClassifyResponse,
    summary="Classify one or more images",
    openapi_extra=_IMAGE_BODY,
    responses=_ERRORS,
)
async def classify(
    request: Request,
    model: str,
    deadline: Deadline,
    version: Version = None,
    top_k: TopK = None,
) -> Response:
    return await classify_images(request, model, {"version": version, "top_k": top_k}, deadline)


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    openapi_extra=_IMAGE_BODY,
    summary="Classify images with the default image model",
    responses=_ERRORS,
)
async def classify_default(
    request: Request,
    settings: SettingsDep,
    deadline: Deadline,
    version: Version = None,
    top_k: TopK = None,
) -> Response:
    options = {"version": version, "top_k": top_k}
    return await classify_images(request, settings.default_image_model, options, deadline)


@router.post(
    "/models/{model}/score",
    response_model=ScoreResponse,
    responses=_ERRORS,
    summary="Score card transactions for fraud",
    openapi_extra=_TRANSACTION_BODY,
)
async def score(
    request: Request,
    model: str,
    deadline: Deadline,
    version: Version = None,
) -> Response:
    return await score_transactions(request, model, {"version": version}, deadline)


@router.post(
    "/fraud/score",
    response_model=ScoreResponse,
    openapi_extra=_TRANSACTION_BODY,
    summary="Score transactions with the default fraud model",
    responses=_ERRORS,
)
async def score_default(
    request: Request,
    settings: SettingsDep,
    deadline: Deadline,
    version: Version = None,
) -> Response:
    return await score_transactions(
        request, settings.default_fraud_model, {"version": version}, deadline
    )
