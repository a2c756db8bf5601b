"""How far any scorer could get on the fraud benchmark: bounds to read our figures against.

The simulator's second pattern makes every payment at a compromised terminal fraud for 28
days, and the protocol learns labels a week late. In a compromise's first week none of its
frauds is known yet, and amounts and times are as before: nothing a scorer may see tells
those payments (here "unannounced") from genuine ones, so it can only rank them among the
genuine, at random. Two scorers bound what is reachable on a test week:

- `perfect`: every fraud first. CP@100 stays below 1 even so: fewer than 100 cards a day
  are fraudulent.
- `knowable`: every fraud first but the unannounced ones, which sit at random among the
  genuine payments. Its AUC ROC is about 1 - u/2 for a share u of unannounced frauds; no
  scorer beats it on average, and the luck of where those frauds fall moves every scorer's
  AUC ROC by as much as the differences between recipes.

A fraud counts as unannounced when no fraud of the same pattern at its terminal is known at
its moment, in the window the features see, (t - 37 days, t - 7 days]. Another pattern's
fraud known there (an amount over 220, a stolen card's) does not announce a compromise.
The pattern behind each label (the CSV's `TX_FRAUD_SCENARIO`) is read for this alone; it is
never a model input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from app.fraud.features import KNOWN_FRAUD_DAYS, TERMINAL_DELAY_DAYS

SCENARIO_COLUMN = "TX_FRAUD_SCENARIO"
COMPROMISED_TERMINAL = 2  # the simulator's second pattern
DAY = np.timedelta64(1, "D")
BOUNDS = {
    "perfect": "bound: every fraud ranked first",
    "knowable": "bound: every fraud first but the unannounced, those at random",
}


def read_scenarios(path: str) -> pd.Series | None:
    """Each transaction's fraud pattern by TRANSACTION_ID; None where the CSV has none."""
    if SCENARIO_COLUMN not in pd.read_csv(path, nrows=0).columns:
        return None
    frame = pd.read_csv(path, usecols=["TRANSACTION_ID", SCENARIO_COLUMN])
    return frame.set_index("TRANSACTION_ID")[SCENARIO_COLUMN]


def unannounced(test: pd.DataFrame, history: pd.DataFrame, scenarios: pd.Series) -> np.ndarray:
    """Which of `test`'s payments are frauds of a compromised terminal before any of that
    pattern's frauds there is known. `history` holds every payment before them."""

    def pattern(frame: pd.DataFrame) -> np.ndarray:
        return scenarios.reindex(frame["TRANSACTION_ID"].to_numpy()).to_numpy()

    compromised = history[(history["TX_FRAUD"] == 1) & (pattern(history) == COMPROMISED_TERMINAL)]
    known_times = {
        terminal: np.sort(rows["TX_DATETIME"].to_numpy())
        for terminal, rows in compromised.groupby("TERMINAL_ID")
    }
    candidates = (test["TX_FRAUD"].to_numpy() == 1) & (pattern(test) == COMPROMISED_TERMINAL)
    hidden = np.zeros(len(test), dtype=bool)
    times, terminals = test["TX_DATETIME"].to_numpy(), test["TERMINAL_ID"].to_numpy()
    for row in np.flatnonzero(candidates):
        earlier = known_times.get(terminals[row], np.array([], dtype=times.dtype))
        t = times[row]
        window = np.searchsorted(
            earlier,
            [t - (TERMINAL_DELAY_DAYS + KNOWN_FRAUD_DAYS) * DAY, t - TERMINAL_DELAY_DAYS * DAY],
            side="right",
        )
        hidden[row] = window[0] == window[1]
    return hidden


def bound_scores(test: pd.DataFrame, hidden: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The two bounding scorers' scores (`BOUNDS`) for a test week whose unannounced frauds
    are `hidden`: 1 for the frauds each ranks first, the rest in one random order below."""
    fraud = test["TX_FRAUD"].to_numpy() == 1
    rest = np.random.default_rng(seed).random(len(test)) / 2
    return {
        "perfect": np.where(fraud, 1.0, rest),
        "knowable": np.where(fraud & ~hidden, 1.0, rest),
    }


def auc_by_announcement(
    test: pd.DataFrame, hidden: np.ndarray, scores: np.ndarray
) -> dict[str, float]:
    """A scorer's AUC ROC on the knowable frauds and on the unannounced ones (`hidden`),
    each against every genuine payment: where it can still gain, and where only luck moves
    it (about 0.5 for any scorer)."""
    fraud = test["TX_FRAUD"].to_numpy() == 1
    split = {}
    for name, frauds in (("knowable", fraud & ~hidden), ("unannounced", hidden)):
        rows = frauds | ~fraud
        split[name] = (
            float(roc_auc_score(frauds[rows], scores[rows])) if frauds.any() else float("nan")
        )
    return split
