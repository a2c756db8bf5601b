"""The stateful fraud routes: raw payments recorded and scored from the history the service
keeps, label feedback, and what the history knows of a card or a terminal.

`/v1/fraud/score` (in `inference.py`) stays stateless: explicit features, nothing recorded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from app.api.bodies import read_json
from app.api.endpoints import Endpoint, EndpointCall, QueryParameter
from app.api.inference import REASONS, VERSION, ScoreResult, reasons_mode
from app.api.responses import json_response
from app.codecs.payments import PaymentBatch, decode_labels, decode_payments
from app.codecs.transaction_schema import Identifier, LabelBatch, RawTransactionBatch
from app.errors import NotInHistory
from app.fraud.alerts.records import Freeze
from app.fraud.features import FEATURE_NAMES
from app.fraud.history.store import EntityKind, EntityView

DEFAULT_PAGE = 20
MAX_PAGE = 1000
INCLUDE = QueryParameter(
    "include",
    "`features`: each result also carries the 17 inputs the history computed.",
    ("features",),
)
RECORD = QueryParameter(
    "record",
    "`false`: score from the history as if recorded, and record nothing (what if).",
    ("true", "false"),
)
LIMIT = QueryParameter(
    "limit", f"How many of the newest transactions; default {DEFAULT_PAGE}, at most {MAX_PAGE}."
)


class PaymentResult(ScoreResult):
    features: dict[str, float] | None = None


class PaymentsResponse(BaseModel):
    model: str
    version: int
    results: list[PaymentResult]


class LabelsResponse(BaseModel):
    results: list[dict[str, Any]]


class HistoryView(BaseModel):
    id: Identifier  # type: ignore[valid-type]
    features: dict[str, float] | None
    transactions: list[dict[str, Any]]
    frozen: dict[str, Any] | None = None  # cards only: the freeze, or null


async def record_and_score(call: EndpointCall) -> Response:
    settings = call.services.settings

    async def read() -> PaymentBatch:
        body = await read_json(call.request, settings.max_body_bytes)
        return decode_payments(body, settings.max_transactions_per_request)

    include = call.query.get("include") == "features"
    record = call.query.get("record") != "false"
    answer = await call.services.data_plane.record_and_score(
        call.inference(), read, include, reasons_mode(call), record
    )
    return json_response(answer)


async def labels(call: EndpointCall) -> Response:
    settings = call.services.settings
    body = await read_json(call.request, settings.max_body_bytes)
    given = decode_labels(body, settings.max_labels_per_request)
    outcomes = await call.services.history.label(given)
    results = [
        {"transaction_id": transaction_id, "fraud": fraud, "outcome": outcome}
        for (transaction_id, fraud), outcome in zip(given, outcomes, strict=True)
    ]
    return json_response({"results": results})


async def customer(call: EndpointCall) -> Response:
    return await _view(call, "customer", call.params["customer_id"])


async def terminal(call: EndpointCall) -> Response:
    return await _view(call, "terminal", call.params["terminal_id"])


async def _view(call: EndpointCall, kind: EntityKind, raw_id: str) -> Response:
    """The window features as of the entity's newest payment, and its newest payments; for
    a card, its freeze."""
    limit = call.limit(DEFAULT_PAGE, MAX_PAGE)
    view = await call.services.history.view(kind, raw_id, limit)
    if view is None:
        raise NotInHistory(f"the history holds no transaction of {kind} {raw_id!r}")
    document = view_document(view, kind)
    if kind == "customer":
        freeze = await call.services.history.alerts.freeze_of(view.entity)
        document["frozen"] = None if freeze is None else freeze_document(freeze)
    return json_response(document)


def view_document(view: EntityView, kind: EntityKind) -> dict[str, Any]:
    newest = view.newest[0].payment
    values = view.windows.model_inputs(newest.amount, False, False)
    prefix = f"{kind}_"
    features = {
        name: value
        for name, value in zip(FEATURE_NAMES.values(), values, strict=True)
        if name.startswith(prefix)
    }
    transactions = [
        {
            "transaction_id": known.payment.transaction_id,
            "customer_id": known.payment.customer_id,
            "terminal_id": known.payment.terminal_id,
            "amount": known.payment.amount,
            "timestamp": iso_time(known.payment.time_us),
            "fraud": known.fraud,
        }
        for known in view.newest
    ]
    return {"id": view.entity, "features": features, "transactions": transactions}


def iso_time(time_us: int) -> str:
    return datetime.fromtimestamp(time_us / 1e6, UTC).isoformat()


def freeze_document(freeze: Freeze) -> dict[str, Any]:
    return {
        "customer_id": freeze.customer_id,
        "frozen_at": iso_time(freeze.at_us),
        "by": freeze.by,
        "alert_id": freeze.alert_id,
        "note": freeze.note,
    }


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


PAYMENT_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/RawTransaction"},
                    {"$ref": "#/components/schemas/RawTransactionBatch"},
                ]
            }
        }
    },
}

ENDPOINTS = [
    Endpoint(
        "POST",
        "/v1/models/{model}/transactions",
        record_and_score,
        "Record raw payments in the history and score them",
        PaymentsResponse,
        PAYMENT_BODY,
        query=(VERSION, INCLUDE, REASONS, RECORD),
        tags=("fraud",),
        schemas=(RawTransactionBatch,),
    ),
    Endpoint(
        "POST",
        "/v1/fraud/transactions",
        record_and_score,
        "Record raw payments and score them with the default fraud model",
        PaymentsResponse,
        PAYMENT_BODY,
        query=(VERSION, INCLUDE, REASONS, RECORD),
        default_model=lambda settings: settings.default_fraud_model,
        tags=("fraud",),
        name="record_and_score_default",
        schemas=(RawTransactionBatch,),
    ),
    Endpoint(
        "POST",
        "/v1/fraud/labels",
        labels,
        "Fraud labels for recorded transactions (chargebacks, investigations)",
        LabelsResponse,
        _body(LabelBatch),
        tags=("fraud",),
        about_model=False,
        schemas=(LabelBatch,),
        access="analyst",
    ),
    Endpoint(
        "GET",
        "/v1/fraud/customers/{customer_id}",
        customer,
        "What the history knows of a card",
        HistoryView,
        None,
        query=(LIMIT,),
        tags=("fraud",),
        about_model=False,
        access="analyst",
    ),
    Endpoint(
        "GET",
        "/v1/fraud/terminals/{terminal_id}",
        terminal,
        "What the history knows of a terminal",
        HistoryView,
        None,
        query=(LIMIT,),
        tags=("fraud",),
        about_model=False,
        access="analyst",
    ),
]
