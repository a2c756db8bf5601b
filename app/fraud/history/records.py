"""What the history holds: raw payments as they happen, and the fraud labels that arrive
later. Event time, not the wall clock: a payment's time is its own timestamp."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import orjson

DAY_US = 86_400_000_000

TransactionId = int | str


_INT64 = range(-(2**63), 2**63)


def id_text(identifier: TransactionId) -> str:
    """An id as the stores write it: its JSON, so that 7 and "7" stay different ids."""
    return orjson.dumps(identifier).decode()


def id_candidates(raw: str) -> list[TransactionId]:
    """The ids a path segment may name: the integer first where it is one the API takes
    (within 64 bits), then the text (7 and "7" are different cards)."""
    digits = raw.removeprefix("-")
    if digits.isascii() and digits.isdigit() and len(digits) <= 19 and int(raw) in _INT64:
        return [int(raw), raw]
    return [raw]


_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def event_time_us(timestamp: datetime) -> int:
    """Microseconds since the epoch; a timestamp without an offset is read as UTC."""
    # Exact integer arithmetic on timedeltas, and no datetime made per call: this runs
    # for every payment.
    epoch = _EPOCH if timestamp.tzinfo is None else _EPOCH_UTC
    return (timestamp - epoch) // _MICROSECOND


class Payment(NamedTuple):
    """One raw transaction, as a card processor sends it. (A tuple: one is made for every
    payment received.)"""

    transaction_id: TransactionId
    customer_id: TransactionId
    terminal_id: TransactionId
    amount: float
    time_us: int  # event time: microseconds since the epoch


class Windows(NamedTuple):
    """The behavioural features of one payment, computed from the history: the benchmark's
    twelve, then the history's own (`app.fraud.features.HISTORY_FEATURES`). (A tuple: one is
    made for every payment scored.)"""

    customer_nb_tx: tuple[int, int, int]  # over 1, 7 and 30 days
    customer_avg_amount: tuple[float, float, float]
    terminal_nb_tx: tuple[int, int, int]
    terminal_risk: tuple[float, float, float]
    customer_amount_over_mean: float  # over the mean of the card's earlier 30 days
    customer_nb_high_amount: int  # earlier payments of 14 days over 3 times that mean
    # In the terminal's known 30 days: the days since its first and last known fraud (0:
    # none), and the share of fraud among its last three payments there.
    terminal_known_fraud_ages: tuple[float, float]
    terminal_risk_last_known: float

    def model_inputs(self, amount: float, weekend: bool, night: bool) -> list[float]:
        """Every model input in `app.fraud.features.ALL_FEATURES` order."""
        counts, averages, terminal_counts, risks, over_mean, high, ages, recent = self
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
            over_mean,
            high,
            ages[0],
            ages[1],
            recent,
        ]
