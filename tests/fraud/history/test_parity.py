"""Online equals offline: payments of the real dataset replayed in time order into each
store (embedded and Redis), in batches of 100 with each label sent once its payment is a week old,
get exactly the window features `training/` computes over the whole file, and the
history's own features too.

A slice (600 cards over seven weeks) runs here; the full replay through HTTP is its own
make target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import DAY_US, Payment, event_time_us
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore
from tests.conftest import REPO_ROOT

DATA = REPO_ROOT.parent / "shared" / "datasets" / "fraud-transactions.csv.gz"
pytestmark = pytest.mark.skipif(not DATA.exists(), reason=f"needs the dataset at {DATA}")


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["embedded", "redis"])
async def test_replayed_windows_equal_the_offline_features(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    pd = pytest.importorskip("pandas")
    from training.fraud_data import COLUMNS, add_features

    frame = pd.read_csv(DATA, usecols=COLUMNS, parse_dates=["TX_DATETIME"], nrows=400_000)
    cards = np.sort(frame["CUSTOMER_ID"].unique())[:600]
    frame = frame[frame["CUSTOMER_ID"].isin(cards) & (frame["TX_DATETIME"] < "2018-05-20")]
    offline = add_features(frame)  # sorted by time, then id
    times = [event_time_us(t.to_pydatetime()) for t in offline["TX_DATETIME"]]
    ids = offline["TRANSACTION_ID"].to_numpy()
    frauds = offline["TX_FRAUD"].to_numpy()
    payments = [
        Payment(int(i), int(c), int(t), float(a), when)
        for i, c, t, a, when in zip(
            ids, offline["CUSTOMER_ID"], offline["TERMINAL_ID"], offline["TX_AMOUNT"], times,
            strict=True,
        )
    ]  # fmt: skip

    store: HistoryStore
    if kind == "redis":
        store = RedisHistory(request.getfixturevalue("redis_url"))
    else:
        store = EmbeddedHistory(tmp_path / "history.db")
    await store.open()
    online, labelled = [], 0
    for start in range(0, len(payments), 100):
        batch = payments[start : start + 100]
        due = batch[-1].time_us - 7 * DAY_US
        labels = []
        while labelled < len(payments) and times[labelled] <= due:
            labels.append((int(ids[labelled]), bool(frauds[labelled])))
            labelled += 1
        await store.label(labels)
        online += [r.windows for r in await store.record(batch)]
    await store.close()

    checked = offline["TX_DATETIME"] >= offline["TX_DATETIME"].min() + pd.Timedelta(days=37)
    assert checked.sum() > 5000
    for n, days in enumerate((1, 7, 30)):
        for column, values, exact in [
            (f"CUSTOMER_ID_NB_TX_{days}DAY_WINDOW", [w.customer_nb_tx[n] for w in online], True),
            (f"CUSTOMER_ID_AVG_AMOUNT_{days}DAY_WINDOW",
             [w.customer_avg_amount[n] for w in online], False),
            (f"TERMINAL_ID_NB_TX_{days}DAY_WINDOW", [w.terminal_nb_tx[n] for w in online], True),
            (f"TERMINAL_ID_RISK_{days}DAY_WINDOW", [w.terminal_risk[n] for w in online], False),
        ]:  # fmt: skip
            expected = offline[column].to_numpy()[checked]
            got = np.array(values)[checked.to_numpy()]
            if exact:
                np.testing.assert_array_equal(got, expected, err_msg=column)
            else:
                np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=column)
    # The history's own, summed in one order online and offline: equal to the last bit.
    for column, values in [
        ("CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW",
         [w.customer_amount_over_mean for w in online]),
        ("CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW", [w.customer_nb_high_amount for w in online]),
        ("TERMINAL_ID_FIRST_KNOWN_FRAUD_AGE_30DAY_WINDOW",
         [w.terminal_known_fraud_ages[0] for w in online]),
        ("TERMINAL_ID_LAST_KNOWN_FRAUD_AGE_30DAY_WINDOW",
         [w.terminal_known_fraud_ages[1] for w in online]),
        ("TERMINAL_ID_RISK_LAST_3_KNOWN", [w.terminal_risk_last_known for w in online]),
    ]:  # fmt: skip
        expected = offline[column].to_numpy()[checked]
        got = np.array(values, dtype=np.float64)[checked.to_numpy()]
        np.testing.assert_array_equal(got, expected, err_msg=column)
    assert (offline["CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW"][checked] > 0).sum() > 100
    assert (offline["TERMINAL_ID_FIRST_KNOWN_FRAUD_AGE_30DAY_WINDOW"][checked] > 0).sum() > 100
