"""The transaction wire contract, written once: every field with its type and bounds.

Two decoders are derived from the one table below: a pydantic model, which defines the API
(OpenAPI, the wording of every refusal), and a msgspec struct, which reads well-formed
bodies in about half the time (`app.codecs.transactions`). Types are strict in both: no
booleans or strings as numbers, no numbers as booleans or strings, and every string has a
bounded length, so what one accepts the other accepts with the same values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
)
from pydantic import create_model as _pydantic_model

from app.fraud.features import WINDOW_FEATURES

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # what JSON encoders everywhere write back exactly
IDENTIFIER_MAX_LENGTH = 64
AMOUNT_MAX = 1e9
COUNT_MAX = 10_000_000
MAX_TIMESTAMP_LENGTH = 64  # ISO 8601 with a fraction and an offset fits in 35

FieldKind = Literal["identifier", "amount", "count", "risk", "timestamp"]

# The contract: every field of a transaction, in the order the API documents them.
FIELDS: dict[str, FieldKind] = {
    "transaction_id": "identifier",
    "customer_id": "identifier",
    "terminal_id": "identifier",
    "amount": "amount",
    "timestamp": "timestamp",
    # Customer before terminal, counts before the others, windows short to long.
    **{
        feature.field: feature.kind
        for feature in sorted(
            WINDOW_FEATURES, key=lambda f: (f.field.split("_")[0], f.kind != "count")
        )
    },
}

Identifier = (
    Annotated[StrictStr, Field(min_length=1, max_length=IDENTIFIER_MAX_LENGTH)]
    | Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
)


def _timestamp_string(value: object) -> object:
    """An ISO 8601 string, not a number of seconds, and bounded: pydantic would read
    fractions of any length."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string")
    if len(value) > MAX_TIMESTAMP_LENGTH:
        raise ValueError(f"at most {MAX_TIMESTAMP_LENGTH} characters")
    return value


# pydantic: validated from the JSON bytes; every bound but the timestamp's is checked
# without a call into Python (this is the path for unusual bodies only).
_PYDANTIC_TYPES: dict[FieldKind, Any] = {
    "identifier": Identifier,
    # Finite by construction: JSON has no NaN or Infinity, and the bound excludes overflow.
    "amount": Annotated[StrictFloat, Field(ge=0.0, le=AMOUNT_MAX, allow_inf_nan=False)],
    "count": Annotated[StrictInt, Field(ge=0, le=COUNT_MAX)],
    "risk": Annotated[StrictFloat, Field(ge=0.0, le=1.0, allow_inf_nan=False)],
    "timestamp": Annotated[
        datetime,
        BeforeValidator(_timestamp_string),
        Field(
            description="ISO 8601. Weekend and night are read in its own wall-clock time.",
            json_schema_extra={"maxLength": MAX_TIMESTAMP_LENGTH},
        ),
    ],
}

# msgspec: the same bounds. Timestamps stay strings here: msgspec rounds fractions of a
# second where pydantic cuts them, so the fast path reads only the plain form itself.
_MSGSPEC_TYPES: dict[FieldKind, Any] = {
    "identifier": Annotated[str, msgspec.Meta(min_length=1, max_length=IDENTIFIER_MAX_LENGTH)]
    | Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)],
    "amount": Annotated[float, msgspec.Meta(ge=0.0, le=AMOUNT_MAX)],
    "count": Annotated[int, msgspec.Meta(ge=0, le=COUNT_MAX)],
    "risk": Annotated[float, msgspec.Meta(ge=0.0, le=1.0)],
    "timestamp": Annotated[str, msgspec.Meta(max_length=MAX_TIMESTAMP_LENGTH)],
}

_FORBID_EXTRA = ConfigDict(extra="forbid")
_TRANSACTION_FIELDS: dict[str, Any] = {
    name: (_PYDANTIC_TYPES[kind], ...) for name, kind in FIELDS.items()
}


def _pydantic_models(name: str, fields: Sequence[str], doc: str) -> tuple[Any, Any]:
    """pydantic models for one object of `fields`, and for `{"transactions": [...]}` of
    them: the API's definition, and its OpenAPI schemas."""
    one = _pydantic_model(
        name, __config__=_FORBID_EXTRA, __doc__=doc, **{f: _TRANSACTION_FIELDS[f] for f in fields}
    )
    many: dict[str, Any] = {"transactions": (Annotated[list[one], Field(min_length=1)], ...)}  # type: ignore[valid-type]
    return one, _pydantic_model(f"{name}Batch", __config__=_FORBID_EXTRA, **many)


Transaction, TransactionBatch = _pydantic_models(
    "Transaction",
    list(FIELDS),
    "One card payment, with the behavioural features of its customer and terminal.",
)
# A raw payment, as a card processor sends it: the service keeps the history itself.
PAYMENT_FIELDS = ("transaction_id", "customer_id", "terminal_id", "amount", "timestamp")
RawTransaction, RawTransactionBatch = _pydantic_models(
    "RawTransaction",
    PAYMENT_FIELDS,
    "One card payment as it happens; the service computes its features from history.",
)


class Label(BaseModel):
    """What an investigation or a chargeback found of one recorded transaction."""

    model_config = _FORBID_EXTRA
    transaction_id: Identifier  # type: ignore[valid-type]
    fraud: StrictBool


class LabelBatch(BaseModel):
    model_config = _FORBID_EXTRA
    labels: Annotated[list[Label], Field(min_length=1)]


def _wire_structs(name: str, fields: list[str]) -> tuple[Any, Any]:
    """msgspec structs for one object of `fields`, and for `{"transactions": [...]}` of
    them. gc=False: they hold only numbers and strings, so the collector need not track
    them."""
    one = msgspec.defstruct(
        name,
        [(field, _MSGSPEC_TYPES[FIELDS[field]]) for field in fields],
        forbid_unknown_fields=True,
        gc=False,
    )
    batch = msgspec.defstruct(
        f"{name}Batch",
        [("transactions", Annotated[list[one], msgspec.Meta(min_length=1)])],  # type: ignore[valid-type]
        forbid_unknown_fields=True,
        gc=False,
    )
    return one, batch


WireTransaction, WireBatch = _wire_structs("WireTransaction", list(FIELDS))
WireRawTransaction, WireRawBatch = _wire_structs("WireRawTransaction", list(PAYMENT_FIELDS))


def is_batch(body: bytes) -> bool:
    """Whether a body is `{"transactions": [...]}` rather than one transaction; a lone
    transaction that carries the word in a value is told apart by its decoders."""
    return b'"transactions"' in body
