"""The 15 fraud-model inputs, named once for training and serving alike.

The definitions follow the fraud benchmark's handbook. `training/` computes these columns
from transaction history; the service receives the behavioural ones from the client and
derives the calendar ones from the timestamp with the functions below.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

WINDOWS_DAYS = (1, 7, 30)
NIGHT_HOURS = range(0, 7)  # 00:00:00 to 06:59:59
TERMINAL_DELAY_DAYS = 7  # fraud labels are known about a week later

WindowKind = Literal["count", "amount", "risk"]


@dataclass(frozen=True)
class WindowFeature:
    """A behavioural feature: its model column, its API field, and what it measures."""

    column: str
    field: str
    kind: WindowKind


WINDOW_FEATURES: tuple[WindowFeature, ...] = (
    *(
        feature
        for n in WINDOWS_DAYS
        for feature in (
            WindowFeature(f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW", f"customer_nb_tx_{n}d", "count"),
            WindowFeature(
                f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW", f"customer_avg_amount_{n}d", "amount"
            ),
        )
    ),
    *(
        feature
        for n in WINDOWS_DAYS
        for feature in (
            WindowFeature(f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW", f"terminal_nb_tx_{n}d", "count"),
            WindowFeature(f"TERMINAL_ID_RISK_{n}DAY_WINDOW", f"terminal_risk_{n}d", "risk"),
        )
    ),
)

# Model column -> the transaction field that carries it in the API.
BEHAVIOURAL_FIELDS: dict[str, str] = {f.column: f.field for f in WINDOW_FEATURES}

FEATURES: tuple[str, ...] = (
    "TX_AMOUNT",
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    *BEHAVIOURAL_FIELDS,
)


# Model column -> its name in answers (`?include=features`) and the customer view.
FEATURE_NAMES: dict[str, str] = {
    "TX_AMOUNT": "amount",
    "TX_DURING_WEEKEND": "during_weekend",
    "TX_DURING_NIGHT": "during_night",
    **BEHAVIOURAL_FIELDS,
}


def is_weekend(timestamp: datetime) -> bool:
    """Saturday or Sunday, in the timestamp's own wall-clock time."""
    return timestamp.weekday() >= 5


def is_night(timestamp: datetime) -> bool:
    """Between midnight and 06:59:59, in the timestamp's own wall-clock time."""
    return timestamp.hour in NIGHT_HOURS
