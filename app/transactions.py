"""Card transactions as clients send them, and their rows for a fraud model."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, Strict, StrictInt, StrictStr
from typing_extensions import TypedDict

from app.fraud_features import BEHAVIOURAL_FIELDS, FEATURES, is_night, is_weekend
from app.model_card import ModelCard, Thresholds

Decision = Literal["approve", "review", "decline"]

# Every constraint below is checked by pydantic-core without calling back into Python:
# transactions arrive by the hundred per request, and validation is most of their cost.
# Bodies are validated as JSON (`validate_json`), where strict means what JSON can say.
# Not a float, not a bool; an integer within 64 bits, which JSON encoders can write back.
# The bounds, named for app.transaction_decoder, which checks the same ones.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
AMOUNT_MAX = 1e9
COUNT_MAX = 10_000_000
Identifier = StrictStr | Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX)]
# Finite by construction: JSON has no NaN or Infinity, and the bound excludes overflow.
Amount = Annotated[float, Field(ge=0.0, le=AMOUNT_MAX, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=COUNT_MAX)]
Risk = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
# Strict: an ISO 8601 string, not a number of seconds.
Timestamp = Annotated[
    datetime,
    Strict(),
    Field(description="ISO 8601. Weekend and night are read in its own wall-clock time."),
]


class Transaction(TypedDict):
    """One card payment, with the behavioural features of its customer and terminal."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    transaction_id: Identifier
    customer_id: Identifier
    terminal_id: Identifier
    amount: Amount
    timestamp: Timestamp
    customer_nb_tx_1d: Count
    customer_nb_tx_7d: Count
    customer_nb_tx_30d: Count
    customer_avg_amount_1d: Amount
    customer_avg_amount_7d: Amount
    customer_avg_amount_30d: Amount
    terminal_nb_tx_1d: Count
    terminal_nb_tx_7d: Count
    terminal_nb_tx_30d: Count
    terminal_risk_1d: Risk
    terminal_risk_7d: Risk
    terminal_risk_30d: Risk


class TransactionBatch(TypedDict):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    transactions: Annotated[list[Transaction], Field(min_length=1)]


class ScoreResult(BaseModel):
    transaction_id: Identifier
    fraud_probability: float
    decision: Decision


class ScoreResponse(BaseModel):
    model: str
    version: int
    results: list[ScoreResult]


def unknown_features(card: ModelCard) -> list[str]:
    """Features a card asks for that a transaction cannot supply."""
    known = {"TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", *BEHAVIOURAL_FIELDS}
    return [f for f in (card.tabular.features if card.tabular else []) if f not in known]


@dataclass(frozen=True, slots=True)
class TransactionRows:
    """Validated transactions as a fraud model reads them."""

    ids: list[str | int]  # transaction_id, for the answer
    features: np.ndarray  # float32 `[n, features]` in FEATURES order

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, transactions: list[Transaction]) -> TransactionRows:
        """From transactions pydantic validated."""
        features = np.array(
            [
                (t["amount"], is_weekend(t["timestamp"]), is_night(t["timestamp"]), *_behaviour(t))
                for t in transactions
            ],
            dtype=np.float32,
        ).reshape(len(transactions), len(FEATURES))
        return cls([t["transaction_id"] for t in transactions], features)

    def for_card(self, card: ModelCard) -> np.ndarray:
        """The features in the column order the card lists."""
        assert card.tabular is not None
        columns = _card_columns(tuple(card.tabular.features))
        return self.features if columns is None else self.features[:, columns]


# One transaction's values in FEATURES order: amount, weekend, night, then these.
_behaviour = itemgetter(*BEHAVIOURAL_FIELDS.values())


@lru_cache(maxsize=64)
def _card_columns(features: tuple[str, ...]) -> list[int] | None:
    """Where a card's columns sit in FEATURES order; None when they are that order."""
    return None if features == FEATURES else [FEATURES.index(f) for f in features]


def decide(probability: float, thresholds: Thresholds) -> Decision:
    if probability >= thresholds.decline:
        return "decline"
    if probability >= thresholds.review:
        return "review"
    return "approve"
