"""What the alert queue holds. A `review` or `decline` decision flags a payment; a card's
flagged payments gather in its one open alert, which analysts work highest score first and
resolve as fraud (the payments labelled fraud, the card frozen) or genuine. Times here are
the wall clock: when the service saw it, not the payment's event time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, get_args

from app.fraud.history.records import Payment, TransactionId

Outcome = Literal["fraud", "genuine"]
AlertStatus = Literal["open", "resolved"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
STATUSES: tuple[AlertStatus, ...] = get_args(AlertStatus)


def now_us() -> int:
    return time.time_ns() // 1000


class FlaggedPayment(NamedTuple):
    """A payment whose decision was `review` or `decline`, with what the service said."""

    payment: Payment
    probability: float
    decision: str
    reasons: list[dict[str, Any]] | None

    def as_stored(self) -> dict[str, Any]:
        """The alert's record of it (JSON)."""
        p = self.payment
        return {
            "transaction_id": p.transaction_id,
            "terminal_id": p.terminal_id,
            "amount": p.amount,
            "time_us": p.time_us,
            "fraud_probability": self.probability,
            "decision": self.decision,
            "reasons": self.reasons,
        }


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome
    note: str
    by: str | None  # the API key's name; None where the service runs without keys
    at_us: int


@dataclass(frozen=True, slots=True)
class AlertSummary:
    """An alert as the queue lists it."""

    id: int
    customer_id: TransactionId
    status: AlertStatus
    score: float  # the highest probability of its payments
    opened_us: int
    payments: int  # how many flagged payments it holds
    resolution: Resolution | None


@dataclass(frozen=True, slots=True)
class Alert:
    summary: AlertSummary
    flagged: list[dict[str, Any]]  # as `FlaggedPayment.as_stored`, in the order flagged
    trail: list[dict[str, Any]]  # what happened to it, oldest first; each has `at_us`


@dataclass(frozen=True, slots=True)
class Freeze:
    customer_id: TransactionId
    at_us: int
    by: str | None
    alert_id: int | None  # the alert whose resolution froze the card, if one did
    note: str


class AlertCounts(NamedTuple):
    """What the store holds now (for metrics): over every replica, not this process."""

    opened: int  # ever
    open: int
    resolved_fraud: int
    resolved_genuine: int
    frozen: int


class QueuePosition(NamedTuple):
    """Where a page of the queue ended: the next page starts after this alert. The queue
    runs by score, highest first, then by id, newest first."""

    score: float
    alert_id: int
