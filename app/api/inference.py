"""The `/v1` inference endpoints: images to classify, transactions to score.

Handlers do HTTP only: they hand the data plane a way to read the body within the limits,
and write its answer as JSON. Each endpoint is one entry of `ENDPOINTS`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.bodies import read_images, read_json
from app.api.endpoints import Endpoint, EndpointCall, QueryParameter
from app.api.responses import json_response
from app.codecs.transaction_schema import Identifier
from app.codecs.transactions import TransactionRows, decode_transactions
from app.fraud.decisions import Decision
from app.fraud.reasons import ReasonsMode


class Prediction(BaseModel):
    label: str
    score: float


class ImageResult(BaseModel):
    predictions: list[Prediction]


class ClassifyResponse(BaseModel):
    model: str
    version: int
    results: list[ImageResult]


class Reason(BaseModel):
    code: str = Field(description="Stable: `amount`, `night`, `terminal_risk_7d`, ...")
    feature: str = Field(description="The model input it is about, by its API name.")
    value: float
    contribution: float = Field(description="How far it pushed the score up, in log-odds.")
    text: str = Field(description="The reason in words, with its numbers.")


class ScoreResult(BaseModel):
    transaction_id: Identifier
    fraud_probability: float
    decision: Decision
    reasons: list[Reason] | None = Field(
        default=None, description="The features that pushed the score up most, largest first."
    )


class ScoreResponse(BaseModel):
    model: str
    version: int
    results: list[ScoreResult]


async def classify(call: EndpointCall) -> Response:
    settings = call.services.settings

    async def read() -> list[bytes]:
        return await read_images(
            call.request, settings.max_body_bytes, settings.max_images_per_request
        )

    answer = await call.services.data_plane.classify(call.inference(), read, call.number("top_k"))
    return json_response(answer)


async def score(call: EndpointCall) -> Response:
    settings = call.services.settings

    async def read() -> TransactionRows:
        body = await read_json(call.request, settings.max_body_bytes)
        return decode_transactions(body, settings.max_transactions_per_request)

    answer = await call.services.data_plane.score(call.inference(), read, reasons_mode(call))
    return json_response(answer)


def reasons_mode(call: EndpointCall) -> ReasonsMode:
    mode = call.query.get("reasons")
    return "flagged" if mode is None else mode  # type: ignore[return-value]


VERSION = QueryParameter("version", "Model version; default: the highest ready.")
REASONS = QueryParameter(
    "reasons",
    "`flagged` (default): reasons with `review` and `decline` decisions; `always`; `never`.",
    ("flagged", "always", "never"),
)
TOP_K = QueryParameter("top_k", "Labels per image, best first; default 5, or every label if fewer.")

IMAGE_BODY: dict[str, Any] = {
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

TRANSACTION_BODY: dict[str, Any] = {
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

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/models/{model}/classify",
        classify,
        "Classify one or more images",
        ClassifyResponse,
        IMAGE_BODY,
        query=(VERSION, TOP_K),
    ),
    Endpoint(
        "POST",
        "/v1/classify",
        classify,
        "Classify images with the default image model",
        ClassifyResponse,
        IMAGE_BODY,
        query=(VERSION, TOP_K),
        default_model=lambda settings: settings.default_image_model,
        name="classify_default",
    ),
    Endpoint(
        "POST",
        "/v1/models/{model}/score",
        score,
        "Score card transactions for fraud",
        ScoreResponse,
        TRANSACTION_BODY,
        query=(VERSION, REASONS),
    ),
    Endpoint(
        "POST",
        "/v1/fraud/score",
        score,
        "Score transactions with the default fraud model",
        ScoreResponse,
        TRANSACTION_BODY,
        query=(VERSION, REASONS),
        default_model=lambda settings: settings.default_fraud_model,
        name="score_default",
    ),
]
