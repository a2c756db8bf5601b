"""Card transactions: the CSV, the benchmark's 15 features, its windows and test-set rules.

Feature names come from `app.fraud_features`, the module the service uses to describe its
inputs, so training and serving name and order the columns identically.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.fraud_features import FEATURES, NIGHT_HOURS, TERMINAL_DELAY_DAYS, WINDOWS_DAYS

CACHE_DIR = Path.home() / ".cache" / "deepserve" / "features"
COLUMNS = ["TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"]


def load_transactions(path: str) -> pd.DataFrame:
    """The CSV with the 15 feature columns added, ordered by time then TRANSACTION_ID.

    Features are cached next to other derived data, keyed by the file's size and mtime.
    """
    source = Path(path).expanduser()
    stat = source.stat()
    key = hashlib.sha1(f"{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    cache = CACHE_DIR / f"{key[:16]}.pkl"
    if cache.exists():
        return pd.read_pickle(cache)
    frame = pd.read_csv(source, usecols=COLUMNS, parse_dates=["TX_DATETIME"])
    frame = add_features(frame)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    frame.to_pickle(cache)
    return frame


def add_features(frame: pd.DataFrame) -> pd.DataFrame:
    """Add the benchmark's 15 inputs to a frame with the raw CSV columns."""
    frame = frame.sort_values(["TX_DATETIME", "TRANSACTION_ID"], kind="stable").reset_index(
        drop=True
    )
    when = frame["TX_DATETIME"]
    frame["TX_DURING_WEEKEND"] = (when.dt.day_of_week >= 5).astype(np.int64)
    frame["TX_DURING_NIGHT"] = when.dt.hour.isin(NIGHT_HOURS).astype(np.int64)

    # Rolling time windows are (t - N days, t], ending at the current row: ties count only
    # the rows before them in TRANSACTION_ID order, as the benchmark defines.
    by_customer = frame.groupby("CUSTOMER_ID", sort=False)
    for n in WINDOWS_DAYS:
        rolled = by_customer.rolling(f"{n}D", on="TX_DATETIME")["TX_AMOUNT"]
        count, mean = rolled.count(), rolled.mean()
        frame[f"CUSTOMER_ID_NB_TX_{n}DAY_WINDOW"] = _align(count, frame)
        frame[f"CUSTOMER_ID_AVG_AMOUNT_{n}DAY_WINDOW"] = _align(mean, frame)

    # Terminal windows are (t - 7 - N days, t - 7 days]: the difference of two rolling windows.
    by_terminal = frame.groupby("TERMINAL_ID", sort=False)
    delay = by_terminal.rolling(f"{TERMINAL_DELAY_DAYS}D", on="TX_DATETIME")["TX_FRAUD"]
    delay_count, delay_frauds = _align(delay.count(), frame), _align(delay.sum(), frame)
    for n in WINDOWS_DAYS:
        whole = by_terminal.rolling(f"{TERMINAL_DELAY_DAYS + n}D", on="TX_DATETIME")["TX_FRAUD"]
        count = _align(whole.count(), frame) - delay_count
        frauds = _align(whole.sum(), frame) - delay_frauds
        frame[f"TERMINAL_ID_NB_TX_{n}DAY_WINDOW"] = count
        frame[f"TERMINAL_ID_RISK_{n}DAY_WINDOW"] = np.where(
            count > 0, frauds / np.maximum(count, 1), 0.0
        )
    return frame


def _align(rolled: pd.Series, frame: pd.DataFrame) -> np.ndarray:
    """groupby().rolling() results come back grouped; put them back in frame order."""
    return rolled.reset_index(level=0, drop=True).sort_index().to_numpy(dtype=np.float64)


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


def feature_matrix(frame: pd.DataFrame) -> np.ndarray:
    """float32 `[n, 15]` in the model's column order."""
    return frame[list(FEATURES)].to_numpy(dtype=np.float32)
