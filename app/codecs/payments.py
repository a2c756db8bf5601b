"""Raw payment bodies (the stateful fraud routes) and label bodies, read by the one
contract of `app.codecs.transaction_schema`: well-formed payments by msgspec, with plain
timestamps (`YYYY-MM-DDTHH:MM:SS`, optionally with microseconds); anything else by pydantic,
which takes the other ISO 8601 forms and words every refusal."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
from pydantic import ValidationError

from app.codecs.transaction_schema import (
    LabelBatch,
    RawTransaction,
    RawTransactionBatch,
    WireRawBatch,
    WireRawTransaction,
    is_batch,
)
from app.codecs.transactions import body_error, validate_one_or_batch
from app.errors import InvalidInput, PayloadTooLarge
from app.fraud.features import is_night, is_weekend
from app.fraud.history.records import Payment, TransactionId, event_time_us


class IncomingPayment(NamedTuple):
    """A payment and its calendar features, read in its own wall-clock time."""

    payment: Payment
    weekend: bool
    night: bool


class PaymentBatch(list[IncomingPayment]):
    """The payments of one request, in request order."""


def decode_payments(body: bytes, max_transactions: int) -> PaymentBatch:
    """One raw transaction, or `{"transactions": [...]}`; 400 for what is not JSON, 422
    naming each bad field, 413 for too many."""
    if not body:
        raise InvalidInput("the body is empty; send a transaction as JSON")
    read = _decode_well_formed(body)
    if read is None:
        try:
            models = validate_one_or_batch(body, RawTransaction, RawTransactionBatch)
        except ValidationError as exc:
            raise body_error(exc.errors(include_url=False), body) from None
        read = models, [m.timestamp for m in models]
    payments, times = read
    if len(payments) > max_transactions:
        raise PayloadTooLarge(
            f"{len(payments)} transactions; at most {max_transactions} per request"
        )
    return PaymentBatch(
        IncomingPayment(
            Payment(p.transaction_id, p.customer_id, p.terminal_id, p.amount, event_time_us(t)),
            is_weekend(t),
            is_night(t),
        )
        for p, t in zip(payments, times, strict=True)
    )


_one = msgspec.json.Decoder(WireRawTransaction)
_many = msgspec.json.Decoder(WireRawBatch)
_PLAIN_STAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6})?")


def _decode_well_formed(body: bytes) -> tuple[Sequence[Any], list[datetime]] | None:
    """The payments and their times through msgspec, or None where pydantic must judge."""
    try:
        payments = _many.decode(body).transactions if is_batch(body) else [_one.decode(body)]
    except ValueError:  # msgspec's errors, and invalid UTF-8 inside a string
        return None
    if not all(_PLAIN_STAMP.fullmatch(p.timestamp) for p in payments):
        return None
    try:
        return payments, [datetime.fromisoformat(p.timestamp) for p in payments]
    except ValueError:  # no 30 February
        return None


def decode_labels(body: bytes, max_labels: int) -> list[tuple[TransactionId, bool]]:
    """`{"labels": [{"transaction_id": ..., "fraud": true|false}, ...]}`."""
    if not body:
        raise InvalidInput('the body is empty; send {"labels": [...]}')
    try:
        labels = LabelBatch.model_validate_json(body).labels
    except ValidationError as exc:
        raise body_error(exc.errors(include_url=False), body) from None
    if len(labels) > max_labels:
        raise PayloadTooLarge(f"{len(labels)} labels; at most {max_labels} per request")
    return [(label.transaction_id, label.fraud) for label in labels]
