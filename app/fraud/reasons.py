"""Reasons in plain words: the features that pushed a fraud score up most, each with a
stable code, its value, its contribution (log-odds, from the model's reasons graph) and a
sentence with the numbers in it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from app.fraud.features import FEATURE_NAMES
from app.model_card import ModelCard

ReasonsMode = Literal["flagged", "always", "never"]
DEFAULT_COUNT = 3
_SPAN = {1: "day", 7: "week", 30: "30 days"}


def _code(feature: str) -> str:
    """A stable code per feature, what a client may switch on: `amount`, `weekend`, `night`,
    `customer_activity_1d`, `customer_average_7d`, `terminal_activity_30d`,
    `terminal_risk_7d`, ..."""
    name = FEATURE_NAMES[feature]
    special = {"during_weekend": "weekend", "during_night": "night"}
    return special.get(
        name, name.replace("_nb_tx_", "_activity_").replace("_avg_amount_", "_average_")
    )


CODES: dict[str, str] = {feature: _code(feature) for feature in FEATURE_NAMES}


def explains(model_card: ModelCard) -> bool:
    """Whether reasons can be given for this model's scores: it has a reasons graph, and
    reads the fifteen features the sentences are about."""
    tabular = model_card.tabular
    return (
        model_card.reasons is not None
        and tabular is not None
        and set(tabular.features) == set(FEATURE_NAMES)
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
