"""Transaction bodies to the rows a fraud model reads.

A request of 100 transactions holds 1,700 values. Well-formed bodies are decoded by msgspec
into typed structs (about 3 us a row, features included); a body msgspec refuses, or with a
timestamp not exactly `YYYY-MM-DDTHH:MM:SS`, goes to pydantic, which accepts the other
ISO 8601 forms and words every refusal. Both come from one contract
(`app.codecs.transaction_schema`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import chain
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np
import orjson
from pydantic import BaseModel, ValidationError

from app.codecs.transaction_schema import (
    IDENTIFIER_MAX_LENGTH,
    Transaction,
    TransactionBatch,
    WireBatch,
    WireTransaction,
    is_batch,
)
from app.errors import InvalidInput, PayloadTooLarge, ServingError, ValidationFailed
from app.fraud.features import BEHAVIOURAL_FIELDS, FEATURES, is_night, is_weekend
from app.model_card import ModelCard


@dataclass(frozen=True, slots=True)
class TransactionRows:
    """Validated transactions as a fraud model reads them."""

    ids: list[str | int]  # transaction_id, for the answer
    features: np.ndarray  # float32 `[n, 15]` in FEATURES order: the benchmark's, sent

    def __len__(self) -> int:
        return len(self.ids)

    def columns_for(self, model_card: ModelCard) -> np.ndarray:
        """The features in the column order the model card lists."""
        return in_card_order(self.features, model_card)


def in_card_order(
    rows: np.ndarray, model_card: ModelCard, order: tuple[str, ...] = FEATURES
) -> np.ndarray:
    """Rows with columns in `order` (FEATURES as sent; ALL_FEATURES from the history), in
    the column order the model card lists."""
    assert model_card.tabular is not None
    columns = _card_columns(tuple(model_card.tabular.features), order)
    return rows if columns is None else rows[:, columns]


def needs_history(model_card: ModelCard) -> bool:
    """Whether a model reads features a client does not send, that only the service's
    history computes (a `history-17` fraud version)."""
    tabular = model_card.tabular
    return tabular is not None and not set(tabular.features) <= set(FEATURES)


def decode_transactions(body: bytes, max_transactions: int) -> TransactionRows:
    """One transaction object, or `{"transactions": [...]}`, as rows; raises a domain error
    (400 for what is not JSON, 422 naming each bad field, 413 for too many)."""
    if not body:
        raise InvalidInput("the body is empty; send a transaction as JSON")
    transactions = decode_well_formed(body)
    if transactions is None:
        try:
            transactions = decode_by_pydantic(body)
        except ValidationError as exc:
            raise body_error(exc.errors(include_url=False), body) from None
    if len(transactions) > max_transactions:
        raise PayloadTooLarge(
            f"{len(transactions)} transactions; at most {max_transactions} per request"
        )
    return transactions


_one = msgspec.json.Decoder(WireTransaction)
_many = msgspec.json.Decoder(WireBatch)

# Timestamps, joined by newlines and matched at once: one regex call per request.
_STAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_STAMPS = re.compile(rf"(?:{_STAMP}\n)*{_STAMP}")
_STAMP_LENGTH = 19


def decode_well_formed(body: bytes) -> TransactionRows | None:
    """The body's transactions through msgspec, or None where pydantic must judge it."""
    try:
        transactions = _many.decode(body).transactions if is_batch(body) else [_one.decode(body)]
    except ValueError:  # msgspec's errors, and invalid UTF-8 inside a string
        return None
    stamps = "\n".join([t.timestamp for t in transactions])
    # With every stamp 19 characters long, the newlines fall between matches and no stamp
    # can hold one: the length check makes each stamp exactly one match.
    if len(stamps) != (_STAMP_LENGTH + 1) * len(transactions) - 1 or not _STAMPS.fullmatch(stamps):
        return None
    try:
        times = [datetime.fromisoformat(t.timestamp) for t in transactions]  # no 30 February
    except ValueError:
        return None
    return _rows(transactions, times)


# One transaction's behavioural values in FEATURES order; structs and models alike.
_behaviour = attrgetter(*BEHAVIOURAL_FIELDS.values())


def _rows(transactions: Sequence[Any], times: list[datetime]) -> TransactionRows:
    values = chain.from_iterable(
        (t.amount, is_weekend(when), is_night(when), *_behaviour(t))
        for t, when in zip(transactions, times, strict=True)
    )
    features = np.fromiter(values, dtype=np.float32, count=len(transactions) * len(FEATURES))
    ids = [t.transaction_id for t in transactions]
    return TransactionRows(ids, features.reshape(len(transactions), len(FEATURES)))


def decode_by_pydantic(body: bytes) -> TransactionRows:
    """pydantic's reading of a body, or its `ValidationError`: the API's definition."""
    models = _validate(body)
    return _rows(models, [t.timestamp for t in models])


def _validate(body: bytes) -> list[Any]:
    return validate_one_or_batch(body, Transaction, TransactionBatch)


def validate_one_or_batch(body: bytes, one: type[BaseModel], batch: type[BaseModel]) -> list[Any]:
    """pydantic's reading of one object, or of `{"transactions": [...]}`."""
    if is_batch(body):  # a batch, or a lone transaction with that word in a value
        try:
            return batch.model_validate_json(body).transactions  # type: ignore[attr-defined, no-any-return]
        except ValidationError as exc:
            if not any(
                p["type"] == "missing" and p["loc"] == ("transactions",) for p in exc.errors()
            ):
                raise
    return [one.model_validate_json(body)]


@lru_cache(maxsize=64)
def _card_columns(features: tuple[str, ...], order: tuple[str, ...]) -> list[int] | None:
    """Where a model card's columns sit in `order`; None when they are that order."""
    return None if features == order else [order.index(f) for f in features]


def body_error(problems: list[Any], body: bytes) -> ServingError:
    """The error for a body pydantic refused: InvalidInput for what is not JSON (NaN and
    Infinity included), ValidationFailed for fields."""
    types = {p["type"] for p in problems}
    if "json_invalid" in types:
        return InvalidInput(f"the body is not valid JSON: {problems[0]['msg']}")
    if "finite_number" in types and _has_non_json_numbers(body):
        return InvalidInput("the body is not valid JSON: NaN and Infinity are not JSON numbers")
    return ValidationFailed.from_pydantic(_merge_union_branches(problems))


def _has_non_json_numbers(body: bytes) -> bool:
    try:
        orjson.loads(body)  # strict JSON: refuses NaN and Infinity
    except orjson.JSONDecodeError:
        return True
    return False


IDENTIFIER_RULE = (
    f"must be a string of 1 to {IDENTIFIER_MAX_LENGTH} characters, or an integer within 64 bits"
)
_IDENTIFIER_BRANCHES = ("str", "constrained-str", "int", "constrained-int")


def _merge_union_branches(problems: list[Any]) -> list[Any]:
    """An identifier is a string or a 64-bit integer: pydantic reports one error per branch
    (`field.constrained-str`, `field.constrained-int`); say it once, at the field."""
    merged: list[Any] = []
    for problem in problems:
        loc = tuple(problem["loc"])
        if loc and loc[-1] in _IDENTIFIER_BRANCHES:
            loc = loc[:-1]
            if merged and tuple(merged[-1]["loc"]) == loc:
                continue
            problem = {**problem, "loc": loc, "msg": IDENTIFIER_RULE}
        merged.append(problem)
    return merged
