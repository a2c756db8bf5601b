"""What the history holds: raw payments as they happen, and the fraud labels that arrive
later. Event time, not the wall clock: a payment's time is its own timestamp."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

DAY_US = 86_400_000_000

TransactionId = int | str


def event_time_us(timestamp: datetime) -> int:
    """Microseconds since the epoch; a timestamp without an offset is read as UTC."""
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    delta = timestamp - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class Payment:
    """One raw transaction, as a card processor sends it."""

    transaction_id: TransactionId
    customer_id: TransactionId
    terminal_id: TransactionId
    amount: float
    time_us: int  # event time: microseconds since the epoch


class Windows(NamedTuple):
    """The twelve behavioural features of one payment, computed from the history. (A
    tuple: one is made for every payment scored.)"""

    customer_nb_tx: tuple[int, int, int]  # over 1, 7 and 30 days
    customer_avg_amount: tuple[float, float, float]
    terminal_nb_tx: tuple[int, int, int]
    terminal_risk: tuple[float, float, float]

    def model_inputs(self, amount: float, weekend: bool, night: bool) -> list[float]:
        """The fifteen model inputs in `app.fraud.features.FEATURES` order."""
        counts, averages, terminal_counts, risks = self
        return [
            amount,
            float(weekend),
            float(night),
            counts[0],
            averages[0],
            counts[1],
            averages[1],
            counts[2],
            averages[2],
            terminal_counts[0],
            risks[0],
            terminal_counts[1],
            risks[1],
            terminal_counts[2],
            risks[2],
        ]
