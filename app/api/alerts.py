"""The analyst's routes: the alert queue, an alert with its card's history and trail, its
resolution, and the frozen cards. Analyst keys (or admin) only, where keys are on."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import Response

from app.api.bodies import read_body
from app.api.endpoints import Endpoint, EndpointCall, QueryParameter
from app.api.fraud import freeze_document, iso_time, view_document
from app.api.responses import json_response
from app.codecs.transactions import body_error
from app.errors import AlertNotFound, FreezeConflict, NotInHistory, ValidationFailed
from app.fraud.alerts.records import (
    STATUSES,
    Alert,
    AlertSummary,
    Outcome,
    QueuePosition,
    Resolution,
)

_Body = TypeVar("_Body", bound=BaseModel)

DEFAULT_PAGE = 50
MAX_PAGE = 500
HISTORY_SHOWN = 20  # the card's newest payments shown with an alert
MAX_NOTE = 2000
MAX_BODY = 64 * 1024  # a note and an outcome, with room to spare

STATUS = QueryParameter("status", "`open` (the default) or `resolved`.", STATUSES)
LIMIT = QueryParameter("limit", f"Alerts per page; default {DEFAULT_PAGE}, at most {MAX_PAGE}.")
CURSOR = QueryParameter("cursor", "Where the previous page ended: its `next_cursor`.", text=True)
FROZEN_LIMIT = QueryParameter(
    "limit", "How many frozen cards, latest first; default 100, at most 10,000."
)


class ResolutionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Outcome
    note: Annotated[str, Field(max_length=MAX_NOTE)] = ""


class FreezeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: Annotated[str, Field(max_length=MAX_NOTE)] = ""


class AlertPage(BaseModel):
    alerts: list[dict[str, Any]]
    next_cursor: str | None


class AlertDocument(BaseModel):
    id: int
    customer_id: int | str
    status: str
    score: float
    opened_at: str
    payments: int
    resolution: dict[str, Any] | None
    transactions: list[dict[str, Any]]
    history: dict[str, Any] | None
    frozen: dict[str, Any] | None
    trail: list[dict[str, Any]]


class FrozenCards(BaseModel):
    frozen: list[dict[str, Any]]


async def queue(call: EndpointCall) -> Response:
    limit = call.limit(DEFAULT_PAGE, MAX_PAGE)
    cursor = call.query.get("cursor")
    after = _position(str(cursor)) if cursor is not None else None
    status = call.query.get("status") or "open"
    alerts = call.services.history.alerts
    found = await alerts.page(status, limit + 1, after)  # type: ignore[arg-type]
    page = found[:limit]
    more = len(found) > limit
    next_cursor = f"{page[-1].score!r}_{page[-1].id}" if more else None
    documents = [summary_document(a) for a in page]
    return json_response({"alerts": documents, "next_cursor": next_cursor})


async def alert(call: EndpointCall) -> Response:
    found = await call.services.history.alerts.get(_alert_id(call))
    if found is None:
        raise AlertNotFound(f"no alert {call.params['alert_id']!r}")
    return json_response(await _alert_document(call, found))


async def resolve(call: EndpointCall) -> Response:
    alert_id = _alert_id(call)
    request = _read(ResolutionRequest, await read_body(call.request, MAX_BODY), required=True)
    alerts = call.services.history.alerts
    resolved = await alerts.resolve(alert_id, request.outcome, request.note, call.by)
    return json_response(await _alert_document(call, resolved))


async def freeze(call: EndpointCall) -> Response:
    request = _read(FreezeRequest, await read_body(call.request, MAX_BODY), required=False)
    raw_id = call.params["customer_id"]
    view = await call.services.history.view("customer", raw_id, 1)
    if view is None:
        raise NotInHistory(f"the history holds no transaction of customer {raw_id!r}")
    frozen = await call.services.history.alerts.freeze(view.entity, request.note, call.by)
    return json_response(freeze_document(frozen))


async def unfreeze(call: EndpointCall) -> Response:
    raw_id = call.params["customer_id"]
    history = call.services.history
    lifted = await history.alerts.unfreeze(raw_id, call.by)
    if lifted is not None:
        return json_response({"customer_id": lifted.customer_id, "lifted": freeze_document(lifted)})
    if await history.view("customer", raw_id, 1) is None:
        raise NotInHistory(f"the history holds no transaction of customer {raw_id!r}")
    raise FreezeConflict(f"card {raw_id!r} is not frozen")


async def frozen(call: EndpointCall) -> Response:
    limit = call.limit(100, 10_000)
    freezes = await call.services.history.alerts.frozen(limit)
    return json_response({"frozen": [freeze_document(f) for f in freezes]})


def summary_document(summary: AlertSummary) -> dict[str, Any]:
    return {
        "id": summary.id,
        "customer_id": summary.customer_id,
        "status": summary.status,
        "score": summary.score,
        "opened_at": iso_time(summary.opened_us),
        "payments": summary.payments,
        "resolution": _resolution(summary.resolution),
    }


async def _alert_document(call: EndpointCall, found: Alert) -> dict[str, Any]:
    """The alert, its payments, its card's newest payments and freeze, and its trail."""
    history = call.services.history
    customer_id = found.summary.customer_id
    view = await history.view("customer", str(customer_id), HISTORY_SHOWN)
    if view is not None and view.entity != customer_id:  # "7" named card 7, not "7"
        view = None
    freeze = await history.alerts.freeze_of(customer_id)
    transactions = []
    for flagged in found.flagged:
        item = dict(flagged)
        item["timestamp"] = iso_time(item.pop("time_us"))
        transactions.append(item)
    trail = []
    for event in found.trail:
        item = dict(event)
        item["at"] = iso_time(item.pop("at_us"))
        trail.append(item)
    return {
        **summary_document(found.summary),
        "transactions": transactions,
        "history": None if view is None else view_document(view, "customer"),
        "frozen": None if freeze is None else freeze_document(freeze),
        "trail": trail,
    }


def _resolution(resolution: Resolution | None) -> dict[str, Any] | None:
    if resolution is None:
        return None
    return {
        "outcome": resolution.outcome,
        "note": resolution.note,
        "by": resolution.by,
        "at": iso_time(resolution.at_us),
    }


def _position(cursor: str) -> QueuePosition:
    """A page's `next_cursor`, the last alert's score and id, back to a queue position."""
    score, _, alert_id = cursor.partition("_")
    try:
        position = QueuePosition(float(score), int(alert_id))
    except ValueError:
        position = None
    if position is None or not (0.0 <= position.score <= 1.0 and 0 < position.alert_id < 2**63):
        message = "not a cursor this service gave; send the `next_cursor` of a page"
        raise ValidationFailed(
            f"query.cursor: {message}", [{"field": "query.cursor", "message": message}]
        )
    return position


def _alert_id(call: EndpointCall) -> int:
    raw = call.params["alert_id"]
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 18):
        raise AlertNotFound(f"no alert {raw!r}: alert ids are positive integers")
    return int(raw)


def _read(model: type[_Body], body: bytes, required: bool) -> _Body:
    """A small JSON body; 400 for what is not JSON, 422 naming each bad field."""
    if not body and not required:
        return model()
    if not body:
        fields = ", ".join(model.model_fields)
        raise ValidationFailed(
            f"the body is empty; send a JSON object with {fields}",
            [{"field": "body", "message": "required"}],
        )
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise body_error(exc.errors(include_url=False), body) from None


def _body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {
        "required": required,
        "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
        },
    }


_ANALYST: dict[str, Any] = {"tags": ("alerts",), "about_model": False, "access": "analyst"}

ENDPOINTS = [
    Endpoint(
        "GET",
        "/v1/fraud/alerts",
        queue,
        "The alert queue: a status's alerts by score, highest first, paged",
        AlertPage,
        None,
        query=(STATUS, LIMIT, CURSOR),
        **_ANALYST,
    ),
    Endpoint(
        "GET",
        "/v1/fraud/alerts/{alert_id}",
        alert,
        "An alert: its payments and their reasons, its card's newest payments, its trail",
        AlertDocument,
        None,
        **_ANALYST,
    ),
    Endpoint(
        "POST",
        "/v1/fraud/alerts/{alert_id}/resolve",
        resolve,
        "Resolve an alert: fraud (its payments labelled fraud, the card frozen) or genuine",
        AlertDocument,
        _body(ResolutionRequest),
        schemas=(ResolutionRequest,),
        **_ANALYST,
    ),
    Endpoint(
        "GET",
        "/v1/fraud/frozen",
        frozen,
        "The frozen cards, latest frozen first",
        FrozenCards,
        None,
        query=(FROZEN_LIMIT,),
        **_ANALYST,
    ),
    Endpoint(
        "POST",
        "/v1/fraud/customers/{customer_id}/freeze",
        freeze,
        "Freeze a card: its later payments are declined (reason `card_frozen`)",
        None,
        _body(FreezeRequest, required=False),
        schemas=(FreezeRequest,),
        **_ANALYST,
    ),
    Endpoint(
        "POST",
        "/v1/fraud/customers/{customer_id}/unfreeze",
        unfreeze,
        "Lift a card's freeze",
        None,
        None,
        **_ANALYST,
    ),
]
