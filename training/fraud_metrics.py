"""The fraud benchmark's metrics: AUC ROC, average precision and card precision top-k."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score


def card_precision_top_k(test: pd.DataFrame, scores: np.ndarray, k: int = 100) -> float:
    """Mean over test days of the share of fraudulent cards among the k highest-scored cards.

    Cards found on an earlier day are left out of later days, as the benchmark prescribes.
    """
    return float(np.mean(list(fraudulent_cards_in_top_k(test, scores, k).values())) / k)


def fraudulent_cards_in_top_k(
    test: pd.DataFrame, scores: np.ndarray, k: int = 100
) -> dict[pd.Timestamp, int]:
    """Per test day, how many of the k highest-scored cards (by their highest score that
    day) were fraudulent that day; cards found on an earlier day left out."""
    frame = pd.DataFrame(
        {
            "day": test["TX_DATETIME"].dt.normalize().to_numpy(),
            "customer": test["CUSTOMER_ID"].to_numpy(),
            "label": test["TX_FRAUD"].to_numpy(),
            "score": scores,
        }
    )
    detected: set[int] = set()
    caught = {}
    for day, rows in frame.groupby("day", sort=True):
        cards = rows.groupby("customer").agg(score=("score", "max"), label=("label", "max"))
        cards = cards[~cards.index.isin(detected)]
        top = cards.sort_values("score", ascending=False, kind="stable").head(k)
        caught[pd.Timestamp(day)] = int(top["label"].sum())
        detected |= set(top.index[top["label"] == 1])
    return caught


def fraud_metrics(test: pd.DataFrame, scores: np.ndarray) -> dict[str, float]:
    labels = test["TX_FRAUD"].to_numpy()
    return {
        "auc_roc": float(roc_auc_score(labels, scores)),
        "average_precision": float(average_precision_score(labels, scores)),
        "card_precision_top_100": card_precision_top_k(test, scores, 100),
    }
