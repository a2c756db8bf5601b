"""The fraud-model inputs, named once for training and serving alike, in named sets.

- `benchmark-15`: the fraud benchmark's 15 inputs, as its handbook defines them. The
  stateless route receives the behavioural ones from the client; the history computes them.
- `history-17`: those and two that the service's own history adds about the card, computed
  only by it, at the payment's moment (see `HISTORY_FEATURES`).
- `history-20`: those and three more about the terminal's known frauds.

`training/` computes every column over the dataset; the history stores compute the same
online. A model card lists the columns its model takes, and names their set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

WINDOWS_DAYS = (1, 7, 30)
# The history's own inputs: a payment against the card's earlier payments of 30 days.
MEAN_AMOUNT_DAYS = 30
HIGH_AMOUNT_DAYS = 14
HIGH_AMOUNT_TIMES = 3.0  # "high": over three times that mean
# The ratio's ceiling: a mean of a fraction of a cent would make it overflow float32 (the
# dataset's largest is 480).
OVER_MEAN_CAP = 1e6
NIGHT_HOURS = range(0, 7)  # 00:00:00 to 06:59:59
TERMINAL_DELAY_DAYS = 7  # fraud labels are known about a week later
KNOWN_FRAUD_DAYS = 30  # the terminal's known window: (t - 7 - 30 days, t - 7 days]
RECENT_KNOWN = 3  # the terminal's last payments of that window, whose frauds are counted

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


@dataclass(frozen=True)
class HistoryFeature:
    """An input only the history can compute: its model column and its name in answers."""

    column: str
    name: str


# One simulated fraud pattern multiplies a stolen card's amounts for two weeks. The
# benchmark's averages include the payment itself, which dilutes a single large amount on a
# quiet card; these two measure it against the card's earlier payments alone, and count how
# many such payments the card made lately (a card being emptied). Chosen on the protocol's
# folds over others tried: time since the card's previous payment, its payments at this
# terminal before, the terminal's undelayed counts, the amount over the card's median.
CARD_HISTORY_FEATURES: tuple[HistoryFeature, ...] = (
    HistoryFeature("CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW", "customer_amount_over_mean_30d"),
    HistoryFeature(
        "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW", f"customer_nb_high_amount_{HIGH_AMOUNT_DAYS}d"
    ),
)
# Another pattern compromises a terminal for four weeks, all its payments fraud; its labels
# are known a week late. The benchmark's risks are shares of fixed windows, which cannot
# tell a terminal whose known frauds began a week ago (still compromised) from one whose
# began four weeks ago (likely over), nor see that its latest known payments were genuine
# again. Within the terminal's known window (t - 37 days, t - 7 days]: the days since its
# first and its last known fraud (0 where it has none), and the share of fraud among its
# last three known payments (0 where it has none).
TERMINAL_HISTORY_FEATURES: tuple[HistoryFeature, ...] = (
    HistoryFeature(
        "TERMINAL_ID_FIRST_KNOWN_FRAUD_AGE_30DAY_WINDOW", "terminal_first_known_fraud_age_30d"
    ),
    HistoryFeature(
        "TERMINAL_ID_LAST_KNOWN_FRAUD_AGE_30DAY_WINDOW", "terminal_last_known_fraud_age_30d"
    ),
    HistoryFeature(
        f"TERMINAL_ID_RISK_LAST_{RECENT_KNOWN}_KNOWN", f"terminal_risk_last_{RECENT_KNOWN}_known"
    ),
)
HISTORY_FEATURES = (*CARD_HISTORY_FEATURES, *TERMINAL_HISTORY_FEATURES)

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "benchmark-15": FEATURES,
    "history-17": (*FEATURES, *(f.column for f in CARD_HISTORY_FEATURES)),
    "history-20": (*FEATURES, *(f.column for f in HISTORY_FEATURES)),
}
# Every column the history computes, in this order: the widest set.
ALL_FEATURES: tuple[str, ...] = FEATURE_SETS["history-20"]
HISTORY_ONLY: frozenset[str] = frozenset(f.column for f in HISTORY_FEATURES)


def feature_set_of(columns: list[str] | tuple[str, ...]) -> str | None:
    """The name of the set these columns are, in this order; None for none."""
    return next((n for n, s in FEATURE_SETS.items() if tuple(columns) == s), None)


# Model column -> its name in answers (`?include=features`) and the customer view.
FEATURE_NAMES: dict[str, str] = {
    "TX_AMOUNT": "amount",
    "TX_DURING_WEEKEND": "during_weekend",
    "TX_DURING_NIGHT": "during_night",
    **BEHAVIOURAL_FIELDS,
    **{f.column: f.name for f in HISTORY_FEATURES},
}


def is_weekend(timestamp: datetime) -> bool:
    """Saturday or Sunday, in the timestamp's own wall-clock time."""
    return timestamp.weekday() >= 5


def is_night(timestamp: datetime) -> bool:
    """Between midnight and 06:59:59, in the timestamp's own wall-clock time."""
    return timestamp.hour in NIGHT_HOURS
