"""Well-formed transaction bodies decoded by msgspec, for speed; pydantic judges the rest.

A request of 100 transactions holds 1,700 values. pydantic-core validates them one by one
and the features are then gathered from dicts: about 5 us a row in all. msgspec decodes
the same body into typed structs with the same bounds, and this path takes about 3 us a
row, features included. msgspec is stricter than pydantic, which also takes numbers sent
as strings, a float for a count or other timestamp forms. So a body msgspec refuses, or
with a timestamp not exactly YYYY-MM-DDTHH:MM:SS, goes to pydantic, which defines the API
and words the errors. What this module accepts, pydantic accepts with the same values;
tests/test_transaction_decoder.py checks that over generated bodies.
"""

from __future__ import annotations

import re
from datetime import datetime
from itertools import chain
from operator import attrgetter
from typing import Annotated

import msgspec
import numpy as np

from app.fraud_features import BEHAVIOURAL_FIELDS, FEATURES, is_night, is_weekend
from app.transactions import (
    AMOUNT_MAX,
    COUNT_MAX,
    INT64_MAX,
    INT64_MIN,
    TransactionRows,
)

_Identifier = str | Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
_Amount = Annotated[float, msgspec.Meta(ge=0.0, le=AMOUNT_MAX)]
_Count = Annotated[int, msgspec.Meta(ge=0, le=COUNT_MAX)]
_Risk = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


# gc=False: the structs hold only numbers and strings, so the collector need not track them.
class _Transaction(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """app.transactions.Transaction, field for field (a test holds them together)."""

    transaction_id: _Identifier
    customer_id: _Identifier
    terminal_id: _Identifier
    amount: _Amount
    timestamp: str  # checked below: msgspec rounds fractions of a second, pydantic cuts
    customer_nb_tx_1d: _Count
    customer_nb_tx_7d: _Count
    customer_nb_tx_30d: _Count
    customer_avg_amount_1d: _Amount
    customer_avg_amount_7d: _Amount
    customer_avg_amount_30d: _Amount
    terminal_nb_tx_1d: _Count
    terminal_nb_tx_7d: _Count
    terminal_nb_tx_30d: _Count
    terminal_risk_1d: _Risk
    terminal_risk_7d: _Risk
    terminal_risk_30d: _Risk


class _Batch(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    transactions: Annotated[list[_Transaction], msgspec.Meta(min_length=1)]


_one = msgspec.json.Decoder(_Transaction)
_many = msgspec.json.Decoder(_Batch)
_behaviour = attrgetter(*BEHAVIOURAL_FIELDS.values())

# Timestamps, joined by newlines and matched at once: one regex call per request.
_STAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
_STAMPS = re.compile(rf"(?:{_STAMP}\n)*{_STAMP}")
_STAMP_LENGTH = 19


def decode_transactions(body: bytes) -> TransactionRows | None:
    """The body's transactions, or None where pydantic must judge the body."""
    try:
        if b'"transactions"' in body:  # as app.request_bodies decides
            transactions = _many.decode(body).transactions
        else:
            transactions = [_one.decode(body)]
    except ValueError:  # msgspec's errors, and invalid UTF-8 inside a string
        return None
    stamps = "\n".join([t.timestamp for t in transactions])
    # With every stamp 19 characters long, the newlines fall between matches and no stamp
    # can hold one: the length check makes each stamp exactly one match.
    if len(stamps) != (_STAMP_LENGTH + 1) * len(transactions) - 1 or not _STAMPS.fullmatch(stamps):
        return None
    rows = []
    try:
        for t in transactions:
            when = datetime.fromisoformat(t.timestamp)  # refuses a 30 February, hour 24
            rows.append((t.amount, is_weekend(when), is_night(when), *_behaviour(t)))
    except ValueError:
        return None
    features = np.fromiter(
        chain.from_iterable(rows), dtype=np.float32, count=len(rows) * len(FEATURES)
    ).reshape(len(rows), len(FEATURES))
    return TransactionRows([t.transaction_id for t in transactions], features)
