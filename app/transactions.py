"""Card transactions as clients send them, and their rows for a fraud model."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.fraud_features import BEHAVIOURAL_FIELDS, is_night, is_weekend
from app.model_card import ModelCard, Thresholds

Decision = Literal["approve", "review", "decline"]


def _identifier(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string or an integer")
    return value


Identifier = Annotated[str | int, BeforeValidator(_identifier)]
# Finite by construction: JSON has no NaN or Infinity, and the bound excludes overflow.
Amount = Annotated[float, Field(ge=0.0, le=1e9, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0, le=10_000_000)]
Risk = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Transaction(BaseModel):
    """One card payment, with the behavioural features of its customer and terminal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transaction_id: Identifier
    customer_id: Identifier
    terminal_id: Identifier
    amount: Amount
    timestamp: datetime = Field(
        description="ISO 8601. Weekend and night are read in its own wall-clock time."
    )
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

    @field_validator("timestamp", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 string, such as 2018-09-30T14:05:00")
        return value


class TransactionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transactions: list[Transaction] = Field(min_length=1)


class ScoreResult(BaseModel):
    transaction_id: Identifier
    fraud_probability: float
    decision: Decision


class ScoreResponse(BaseModel):
    model: str
    version: int
    results: list[ScoreResult]


def _value(transaction: Transaction, feature: str) -> float:
    if feature == "TX_AMOUNT":
        return transaction.amount
    if feature == "TX_DURING_WEEKEND":
        return float(is_weekend(transaction.timestamp))
    if feature == "TX_DURING_NIGHT":
        return float(is_night(transaction.timestamp))
    return float(getattr(transaction, BEHAVIOURAL_FIELDS[feature]))


def unknown_features(card: ModelCard) -> list[str]:
    """Features a card asks for that a transaction cannot supply."""
    known = {"TX_AMOUNT", "TX_DURING_WEEKEND", "TX_DURING_NIGHT", *BEHAVIOURAL_FIELDS}
    return [f for f in (card.tabular.features if card.tabular else []) if f not in known]


def feature_rows(transactions: list[Transaction], card: ModelCard) -> np.ndarray:
    """float32 `[n, features]` in the column order the card lists."""
    assert card.tabular is not None
    features = card.tabular.features
    rows = [[_value(t, f) for f in features] for t in transactions]
    return np.asarray(rows, dtype=np.float32).reshape(len(transactions), len(features))


def decide(probability: float, thresholds: Thresholds) -> Decision:
    if probability >= thresholds.decline:
        return "decline"
    if probability >= thresholds.review:
        return "review"
    return "approve"
