"""The decision rule: a fraud probability against a model's two thresholds."""

from __future__ import annotations

from typing import Literal

from app.model_card import Thresholds

Decision = Literal["approve", "review", "decline"]


def decide(probability: float, thresholds: Thresholds) -> Decision:
    if probability >= thresholds.decline:
        return "decline"
    if probability >= thresholds.review:
        return "review"
    return "approve"
