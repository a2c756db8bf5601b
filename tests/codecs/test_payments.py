"""Raw payment bodies: the fast reading (msgspec) takes only what pydantic, the API's
definition, reads the same way, and leaves everything else to it."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from app.codecs.payments import _decode_well_formed, decode_payments
from app.codecs.transaction_schema import RawTransaction, RawTransactionBatch
from app.codecs.transactions import validate_one_or_batch
from app.errors import InvalidInput, ServingError, ValidationFailed


def body(**changes: Any) -> dict[str, Any]:
    payment = {
        "transaction_id": 1,
        "customer_id": "card-7",
        "terminal_id": 42,
        "amount": 12.5,
        "timestamp": "2018-09-01T10:00:00",
    }
    return {k: v for k, v in (payment | changes).items() if v is not None}


BODIES = [
    body(),
    body(timestamp="2018-09-01T10:00:00.123456"),
    body(timestamp="2018-09-01T10:00:00.12"),
    body(timestamp="2018-09-01T10:00:00Z"),
    body(timestamp="2018-09-01T10:00:00+02:00"),
    body(timestamp="2018-02-30T10:00:00"),
    body(timestamp="2018-09-01"),
    body(amount=50),
    body(amount=True),
    body(amount=-1.0),
    body(amount="12.5"),
    body(transaction_id=""),
    body(transaction_id=2**70),
    body(customer_id=None),
    body(extra=1),
    {"transactions": [body(), body(transaction_id=2, timestamp="2018-09-01T11:00:00.000001")]},
    {"transactions": []},
    {"transactions": [body(), body(amount=True)]},
]


@pytest.mark.parametrize("document", BODIES)
def test_the_fast_reading_agrees_with_pydantic_or_steps_aside(document: dict[str, Any]) -> None:
    raw = json.dumps(document).encode()
    try:
        models = validate_one_or_batch(raw, RawTransaction, RawTransactionBatch)
    except ValidationError:
        models = None
    fast = _decode_well_formed(raw)
    if fast is not None:
        assert models is not None, "msgspec took what pydantic refuses"
        payments, times = fast
        assert [m.timestamp for m in models] == times
        for model, payment in zip(models, payments, strict=True):
            for field in ("transaction_id", "customer_id", "terminal_id", "amount"):
                assert getattr(model, field) == getattr(payment, field)
                assert type(getattr(model, field)) is type(getattr(payment, field))
    try:
        decode_payments(raw, 1000)
    except ServingError as exc:
        assert models is None, exc
        assert isinstance(exc, InvalidInput | ValidationFailed)
    else:
        assert models is not None


def test_plain_timestamps_take_the_fast_reading() -> None:
    assert _decode_well_formed(orjson.dumps(body())) is not None
    assert _decode_well_formed(orjson.dumps(body(timestamp="2018-09-01T10:00:00.5"))) is None
