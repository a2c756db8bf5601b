"""Reasons in plain words: the features that pushed a fraud score up most, each with a
stable code, its value, its contribution (log-odds, from the model's reasons graph) and a
sentence with the numbers in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from app.fraud.features import (
    FEATURE_NAMES,
    FEATURES,
    HIGH_AMOUNT_DAYS,
    MEAN_AMOUNT_DAYS,
    RECENT_KNOWN,
    TERMINAL_HISTORY_FEATURES,
)
from app.model_card import ModelCard

ReasonsMode = Literal["flagged", "always", "never"]
DEFAULT_COUNT = 3
_SPAN = {1: "day", 7: "week", 30: "30 days"}
_FIRST_KNOWN, _LAST_KNOWN, _RISK_LAST_KNOWN = (f.column for f in TERMINAL_HISTORY_FEATURES)
_KNOWN_FRAUDS = frozenset((_FIRST_KNOWN, _LAST_KNOWN, _RISK_LAST_KNOWN))


def _code(feature: str) -> str:
    """A stable code per feature, what a client may switch on: `amount`, `weekend`, `night`,
    `customer_activity_1d`, `customer_average_7d`, `terminal_activity_30d`,
    `terminal_risk_7d`, `customer_amount_over_mean_30d`, `customer_high_amounts_14d`,
    `terminal_first_known_fraud_age_30d`, `terminal_risk_last_3_known`..."""
    name = FEATURE_NAMES[feature]
    special = {
        "during_weekend": "weekend",
        "during_night": "night",
        f"customer_nb_high_amount_{HIGH_AMOUNT_DAYS}d": (
            f"customer_high_amounts_{HIGH_AMOUNT_DAYS}d"
        ),
    }
    return special.get(
        name, name.replace("_nb_tx_", "_activity_").replace("_avg_amount_", "_average_")
    )


CODES: dict[str, str] = {feature: _code(feature) for feature in FEATURE_NAMES}


def explains(model_card: ModelCard) -> bool:
    """Whether reasons can be given for this model's scores: it has a reasons graph, and
    reads the benchmark's fifteen features (the sentences compare with them), and only
    features the sentences are about."""
    tabular = model_card.tabular
    return (
        model_card.reasons is not None
        and tabular is not None
        and set(FEATURES) <= set(tabular.features) <= set(FEATURE_NAMES)
    )


def top_reasons(
    values: Mapping[str, float],
    attributions: Mapping[str, float],
    card: Any = None,
    terminal: Any = None,
    count: int = DEFAULT_COUNT,
) -> list[dict[str, Any]]:
    """The `count` features with the largest positive contribution, largest first. `values`
    and `attributions` are keyed by the dataset's feature names; `card` and `terminal` name
    the payment's card and terminal where known (the stateful route)."""
    pushing_up = sorted(
        (f for f, a in attributions.items() if a > 0), key=lambda f: -attributions[f]
    )
    return [
        {
            "code": CODES[feature],
            "feature": FEATURE_NAMES[feature],
            "value": values[feature],
            "contribution": round(attributions[feature], 4),
            "text": sentence(feature, values, card, terminal),
        }
        for feature in pushing_up[:count]
    ]


def frozen_reason(card: Any) -> dict[str, Any]:
    """Why a frozen card's payment is declined, whatever its score: the first reason."""
    return {
        "code": "card_frozen",
        "feature": None,
        "value": None,
        "contribution": None,
        "text": f"card {card} is frozen: its payments are declined until it is unfrozen",
    }


def sentence(feature: str, v: Mapping[str, float], card: Any, terminal: Any) -> str:
    """One feature's value in words, against what it is compared with."""
    this_card = "this card" if card is None else f"card {card}"
    this_terminal = "this terminal" if terminal is None else f"terminal {terminal}"
    if feature in _KNOWN_FRAUDS:
        return _known_frauds(feature, v[feature], this_terminal)
    average_30 = v["CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW"]
    payments_30 = v["CUSTOMER_ID_NB_TX_30DAY_WINDOW"]
    if feature == "TX_AMOUNT":
        amount = v[feature]
        if payments_30 > 1 and average_30 > 0:
            return (
                f"amount {amount:.2f} is {amount / average_30:.1f} times {this_card}'s "
                f"30-day average of {average_30:.2f}"
            )
        return f"amount {amount:.2f}, with no earlier payment of {this_card} to compare"
    if feature == "CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW":
        return _against_earlier_mean(v, this_card)
    if feature == f"CUSTOMER_ID_NB_HIGH_AMOUNT_{HIGH_AMOUNT_DAYS}DAY_WINDOW":
        return _high_amounts(v[feature], v, this_card)
    if feature == "TX_DURING_NIGHT":
        return "night-time payment (00:00 to 06:59)"
    if feature == "TX_DURING_WEEKEND":
        return "weekend payment"
    days = int(feature.split("_")[-2].removesuffix("DAY"))
    span = _SPAN[days]
    if feature.startswith("CUSTOMER_ID_NB_TX"):
        daily = payments_30 / 30
        return (
            f"{this_card}: {v[feature]:.0f} payments in the last {span}, this one included "
            f"(over 30 days, {daily:.1f} a day)"
        )
    if feature.startswith("CUSTOMER_ID_AVG_AMOUNT"):
        text = f"{this_card}: average amount {v[feature]:.2f} over the last {span}"
        return text if days == 30 else f"{text}, against {average_30:.2f} over 30 days"
    count = v[f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW"]
    if feature.startswith("TERMINAL_ID_NB_TX"):
        return f"{this_terminal}: {count:.0f} transactions in the known {span} before"
    frauds = round(v[feature] * count)
    return (
        f"{this_terminal}: {frauds} of its {count:.0f} transactions in the known {span} "
        "before were fraud"
    )


def _earlier_mean(v: Mapping[str, float]) -> tuple[int, float | None]:
    """How many earlier payments of the card's 30 days there were, and their mean (None
    where there were none), from the 30-day window, which counts the payment too."""
    count = round(v[f"CUSTOMER_ID_NB_TX_{MEAN_AMOUNT_DAYS}DAY_WINDOW"])
    earlier = count - 1
    if earlier < 1:
        return 0, None
    total = v[f"CUSTOMER_ID_AVG_AMOUNT_{MEAN_AMOUNT_DAYS}DAY_WINDOW"] * count - v["TX_AMOUNT"]
    return earlier, max(total / earlier, 0.0)


def _against_earlier_mean(v: Mapping[str, float], this_card: str) -> str:
    amount = v["TX_AMOUNT"]
    earlier, mean = _earlier_mean(v)
    if mean is None:
        return f"amount {amount:.2f}, with no earlier payment of {this_card} in 30 days to compare"
    payments = "payment" if earlier == 1 else "payments"
    if mean < 0.005:  # shown as 0.00: "times" it would say nothing
        return (
            f"amount {amount:.2f}, where {this_card}'s {earlier} earlier {payments} in 30 days "
            "came to 0.00"
        )
    ratio = v["CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"]
    return (
        f"amount {amount:.2f} is {ratio:.1f} times the mean of {this_card}'s {earlier} earlier "
        f"{payments} in 30 days ({mean:.2f})"
    )


def _high_amounts(count: float, v: Mapping[str, float], this_card: str) -> str:
    _, mean = _earlier_mean(v)
    against = "its 30-day mean" if mean is None else f"its 30-day mean of {mean:.2f}"
    payments = "payment" if round(count) == 1 else "payments"
    return (
        f"{this_card}: {count:.0f} {payments} in the {HIGH_AMOUNT_DAYS} days before over three "
        f"times {against}"
    )


def _known_frauds(feature: str, value: float, this_terminal: str) -> str:
    """The terminal's known frauds (labels a week late) in words."""
    if feature == _RISK_LAST_KNOWN:
        return (
            f"{this_terminal}: {value:.0%} of its latest known transactions (up to "
            f"{RECENT_KNOWN}, a week or more ago) were fraud"
        )
    which = "first" if feature == _FIRST_KNOWN else "latest"
    if value == 0:
        return f"{this_terminal}: no known fraud in the 30 known days before"
    return f"{this_terminal}: its {which} known fraud of the 30 known days was {value:.1f} days ago"
