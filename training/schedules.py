"""Learning-rate schedules: pure functions of the step, as multipliers of the peak rate."""

from __future__ import annotations

import math
from typing import Literal

ScheduleName = Literal["constant", "step", "cosine", "onecycle"]


def lr_multiplier(
    name: ScheduleName,
    step: int,
    total_steps: int,
    warmup_fraction: float = 0.2,
    start: float = 0.0,
    end: float = 0.0,
) -> float:
    """The factor applied to the peak learning rate at `step` (0-based) of `total_steps`.

    `start` and `end` are where one-cycle begins and finishes, as fractions of the peak.
    """
    progress = min(step / max(total_steps, 1), 1.0)
    if name == "constant":
        return 1.0
    if name == "step":
        # Divide by ten at 50% and again at 75% of training.
        return 0.1 ** sum(progress >= milestone for milestone in (0.5, 0.75))
    if name == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if name == "onecycle":
        # Linear warm-up from `start` to the peak, then linear decay to `end`.
        if progress < warmup_fraction:
            return start + (1.0 - start) * progress / warmup_fraction
        return end + (1.0 - end) * max(0.0, (1.0 - progress) / (1.0 - warmup_fraction))
    raise ValueError(f"unknown schedule {name!r}")
