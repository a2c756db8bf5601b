"""Card transactions: the CSV, every model input (the benchmark's 15 and the history's
own), the benchmark's windows and test-set rules.

Feature names come from `app.fraud.features`, the module the service uses to describe its
inputs, so training and serving name and order the columns identically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.fraud.features import (
    BEHAVIOURAL_FIELDS,
    FEATURES,
    HIGH_AMOUNT_DAYS,
    HIGH_AMOUNT_TIMES,
    KNOWN_FRAUD_DAYS,
    MEAN_AMOUNT_DAYS,
    NIGHT_HOURS,
    OVER_MEAN_CAP,
    RECENT_KNOWN,
    TERMINAL_DELAY_DAYS,
    TERMINAL_HISTORY_FEATURES,
    WINDOWS_DAYS,
)
from app.fraud.history.records import DAY_US

CACHE_DIR = Path.home() / ".cache" / "deepserve" / "features"
FEATURES_VERSION = 6  # part of the cache key: bump when the feature code changes
COLUMNS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]


def load_transactions(path: str) -> pd.DataFrame:
    """The CSV with every feature column added, ordered by time then TRANSACTION_ID.

    Features are cached next to other derived data, keyed by the file's size and mtime.
    """
    source = Path(path).expanduser()
    stat = source.stat()
    identity = f"{FEATURES_VERSION}:{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    key = hashlib.sha1(identity.encode()).hexdigest()
    cache = CACHE_DIR / f"{key[:16]}.pkl"
    if cache.exists():
        return pd.read_pickle(cache)
    frame = pd.read_csv(source, usecols=COLUMNS, parse_dates=["TX_DATETIME"])
    frame = add_features(frame)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    frame.to_pickle(cache)
    return frame


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add every model input (`app.fraud.features.ALL_FEATURES`) to a frame with the raw CSV
    columns."""
    frame = frame.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable")
    frame = frame.reset_index(drop=True)
    when = frame["TX_DATETIME"]
    frame["TX_DURING_WEEKEND"] = (when.dt.day_of_week >= 5).astype(np.int64)
    frame["TX_DURING_NIGHT"] = when.dt.hour.isin(NIGHT_HOURS).astype(np.int64)

    customer = _Windows(frame, "CUSTOMER_ID")
    for n in WINDOWS_DAYS:
        # (t - N days, t], the current transaction included.
        count, amount = customer.up_to_current(n, "TX_AMOUNT")
        frame[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = count
        frame[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = amount / count
    terminal = _Windows(frame, "TERMINAL_ID")
    for n in WINDOWS_DAYS:
        # (t - 7 - N days, t - 7 days]: only labels known after the delay.
        count, frauds = terminal.between(TERMINAL_DELAY_DAYS + n, TERMINAL_DELAY_DAYS, "TX_FRAUD")
        frame[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
        frame[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = np.where(
            count > 0, frauds / np.maximum(count, 1), 0.0
        )
    over_mean, high = customer.against_earlier_mean(
        MEAN_AMOUNT_DAYS, HIGH_AMOUNT_DAYS, HIGH_AMOUNT_TIMES
    )
    frame["CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"] = over_mean
    frame[f"CUSTOMER_ID_NB_HIGH_AMOUNT_{HIGH_AMOUNT_DAYS}DAY_WINDOW"] = high
    known = terminal.known_frauds(TERMINAL_DELAY_DAYS + KNOWN_FRAUD_DAYS, TERMINAL_DELAY_DAYS)
    for feature, values in zip(TERMINAL_HISTORY_FEATURES, known, strict=True):
        frame[feature.column] = values
    return frame


class _Windows:
    """Counts and sums over time windows of one entity's transactions, vectorized.

    Rows are sorted by (entity, time, TRANSACTION_ID) and keyed by entity and time in
    seconds, so a window's bounds are two binary searches and its sum a difference of
    cumulative sums. The sums restart at each entity: a cumulative sum over the whole file
    reaches 1e8, where float64 keeps only 1e-8 of a transaction's amount, which is what
    the service's online sums would then be measured against. `frame` must already be in
    (time, TRANSACTION_ID) order.
    """

    def __init__(self, frame: pd.DataFrame, entity: str) -> None:
        seconds = (frame["TX_DATETIME"] - frame["TX_DATETIME"].min()).dt.total_seconds()
        seconds = seconds.to_numpy(np.int64)
        ids = frame[entity].to_numpy(np.int64)
        ids = ids - ids.min()
        self.order = np.lexsort((np.arange(len(frame)), seconds, ids))  # stable by frame order
        span = int(seconds.max()) + 100 * 86400  # room for windows reaching below zero
        self.keys = ids[self.order] * span + seconds[self.order] + 50 * 86400
        sorted_ids = ids[self.order]
        self.entity_start = np.searchsorted(sorted_ids, sorted_ids, side="left")
        self.sorted_ids = sorted_ids
        self.frame = frame

    def _sums(self, column: str) -> np.ndarray:
        """Per row, the sum of `column` over its entity's rows up to it (inclusive)."""
        values = self.frame[column].to_numpy(np.float64)[self.order]
        return pd.Series(values).groupby(self.sorted_ids).cumsum().to_numpy()

    def _before(self, sums: np.ndarray, index: np.ndarray) -> np.ndarray:
        """The entity's sum over its rows before `index` (0 at the entity's first row)."""
        inside = index > self.entity_start
        return np.where(inside, sums[np.maximum(index - 1, 0)], 0.0)

    def _scatter(self, sorted_values: np.ndarray) -> np.ndarray:
        out = np.empty_like(sorted_values)
        out[self.order] = sorted_values
        return out

    def up_to_current(self, days: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        """Count and sum of `column` over (t - days, t], up to and including each row."""
        position = np.arange(len(self.keys))
        start = np.searchsorted(self.keys, self.keys - days * 86400, side="right")
        sums = self._sums(column)
        count = (position + 1 - start).astype(np.float64)
        return self._scatter(count), self._scatter(sums - self._before(sums, start))

    def between(self, far_days: int, near_days: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        """Count and sum of `column` over (t - far_days, t - near_days]."""
        start = np.searchsorted(self.keys, self.keys - far_days * 86400, side="right")
        stop = np.searchsorted(self.keys, self.keys - near_days * 86400, side="right")
        sums = self._sums(column)
        total = self._before(sums, stop) - self._before(sums, start)
        return self._scatter((stop - start).astype(np.float64)), self._scatter(total)

    def against_earlier_mean(
        self, mean_days: int, high_days: int, times: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per row, against the mean of the entity's earlier rows in (t - mean_days, t), the
        row itself excluded: its amount over that mean (1 where there are none, or their mean
        is 0; at most OVER_MEAN_CAP), and how many of its earlier rows in (t - high_days, t)
        had an amount over `times` that mean."""
        position = np.arange(len(self.keys))
        amounts = self.frame["TX_AMOUNT"].to_numpy(np.float64)[self.order]
        start = np.searchsorted(self.keys, self.keys - mean_days * 86400, side="right")
        high_start = np.searchsorted(self.keys, self.keys - high_days * 86400, side="right")
        deepest = int((position - start).max(initial=0))
        # Summed oldest first, one step back at a time, as the history sums them online, so
        # that the means are equal to the last bit and the comparisons with them agree.
        # (Adding 0.0 outside the window leaves a sum unchanged.)
        total = np.zeros(len(position))
        for back in range(deepest, 0, -1):
            earlier = position - back
            total += np.where(earlier >= start, amounts[np.maximum(earlier, 0)], 0.0)
        count = position - start
        mean = total / np.maximum(count, 1)
        ratio = np.minimum(amounts / np.where(mean > 0, mean, 1.0), OVER_MEAN_CAP)
        over = np.where((count > 0) & (mean > 0), ratio, 1.0)
        bar = np.where(count > 0, times * mean, np.inf)
        high = np.zeros(len(position))
        for back in range(1, deepest + 1):
            earlier = position - back
            high += (earlier >= high_start) & (amounts[np.maximum(earlier, 0)] > bar)
        return self._scatter(over), self._scatter(high)

    def known_frauds(
        self, far_days: int, near_days: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row, over its entity's rows in (t - far_days, t - near_days]: the days since
        the first and since the last of them labelled fraud (0 where none is), and the share
        of fraud among the last `RECENT_KNOWN` of them (0 where there are none). Days are
        microseconds over a day's, as the history divides them."""
        start = np.searchsorted(self.keys, self.keys - far_days * 86400, side="right")
        stop = np.searchsorted(self.keys, self.keys - near_days * 86400, side="right")
        labels = self.frame["TX_FRAUD"].to_numpy(np.int64)[self.order]
        frauds = np.flatnonzero(labels)
        seconds = self.keys  # the entity's part adds the same to every row of it
        first = np.searchsorted(frauds, start, side="left")
        last = np.searchsorted(frauds, stop, side="left") - 1
        ages = []
        for at, found in (
            (first, first < len(frauds)),
            (last, last >= 0),
        ):
            row = frauds[np.clip(at, 0, max(len(frauds) - 1, 0))] if len(frauds) else start
            found &= (row >= start) & (row < stop)
            micros = (seconds - seconds[row]) * 1_000_000
            ages.append(np.where(found, micros / DAY_US, 0.0))
        cumulative = np.concatenate([[0], np.cumsum(labels)])
        recent = np.minimum(stop - start, RECENT_KNOWN)
        share = (cumulative[stop] - cumulative[stop - recent]) / np.maximum(recent, 1)
        return self._scatter(ages[0]), self._scatter(ages[1]), self._scatter(share)


@dataclass
class Window:
    train: pd.DataFrame
    test: pd.DataFrame


def split_window(
    frame: pd.DataFrame,
    train_start: str,
    train_days: int = 7,
    delay_days: int = 7,
    test_days: int = 7,
) -> Window:
    """The benchmark's train / delay / test split, with known-compromised cards removed."""
    start = pd.Timestamp(train_start)
    day = pd.Timedelta(days=1)
    train_end = start + train_days * day
    test_start = train_end + delay_days * day
    when = frame["TX_DATETIME"]
    train = frame[(when >= start) & (when < train_end)]
    test = frame[(when >= test_start) & (when < test_start + test_days * day)]

    known = set(train.loc[train["TX_FRAUD"] == 1, "CUSTOMER_ID"])
    kept = []
    for i in range(test_days):
        day_start = test_start + i * day
        # Frauds up to (delay start + i - 1 days) are known by test day i.
        known_until = train_end + (i - 1) * day
        known |= set(
            frame.loc[
                (when >= train_end) & (when < known_until + day) & (frame["TX_FRAUD"] == 1),
                "CUSTOMER_ID",
            ]
        )
        today = test[(test["TX_DATETIME"] >= day_start) & (test["TX_DATETIME"] < day_start + day)]
        kept.append(today[~today["CUSTOMER_ID"].isin(known)])
    return Window(train=train, test=pd.concat(kept))


def feature_matrix(frame: pd.DataFrame, columns: tuple[str, ...] = FEATURES) -> np.ndarray:
    """float32 `[n, len(columns)]` in the model's column order."""
    return frame[list(columns)].to_numpy(dtype=np.float32)


def service_transaction(record: dict) -> dict:
    """A row of `load_transactions` as the JSON transaction the service scores."""
    body = {
        "transaction_id": int(record["TRANSACTION_ID"]),
        "customer_id": int(record["CUSTOMER_ID"]),
        "terminal_id": int(record["TERMINAL_ID"]),
        "amount": float(record["TX_AMOUNT"]),
        "timestamp": record["TX_DATETIME"].isoformat(),
    }
    for column, field in BEHAVIOURAL_FIELDS.items():
        value = record[column]
        body[field] = int(value) if "_NB_TX_" in column else float(value)
    return body
