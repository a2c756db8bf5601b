"""Raw payment bodies (the stateful fraud routes) and label bodies, read by the one
contract of `app.codecs.transaction_schema`: strict types, every refusal worded by pydantic."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from app.codecs.transaction_schema import LabelBatch, RawTransaction, RawTransactionBatch
from app.codecs.transactions import body_error, validate_one_or_batch
from app.errors import InvalidInput, PayloadTooLarge
from app.fraud.features import is_night, is_weekend
from app.fraud.history.records import Payment, TransactionId, event_time_us


@dataclass(frozen=True, slots=True)
class IncomingPayment:
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
    try:
        models = validate_one_or_batch(body, RawTransaction, RawTransactionBatch)
    except ValidationError as exc:
        raise body_error(exc.errors(include_url=False), body) from None
    if len(models) > max_transactions:
        raise PayloadTooLarge(f"{len(models)} transactions; at most {max_transactions} per request")
    return PaymentBatch(
        IncomingPayment(
            Payment(
                m.transaction_id,
                m.customer_id,
                m.terminal_id,
                m.amount,
                event_time_us(m.timestamp),
            ),
            is_weekend(m.timestamp),
            is_night(m.timestamp),
        )
        for m in models
    )


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
