"""Bulk loading a CSV into the embedded history: what is kept, in what form, and that the
service then sees it."""

from __future__ import annotations

import asyncio
import gzip
from pathlib import Path

import pytest

from app.fraud.history.bulk_load import main
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.redis_store import RedisHistory

CSV = """TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,TX_AMOUNT,TX_TIME_SECONDS,TX_FRAUD
1,2018-04-01 00:00:31,596,3156,57.16,31,0
2,2018-05-01 10:00:00,596,3156,10.00,0,1
3,2018-05-09 12:00:00,"card,7",3156,20.50,0,
4,2018-05-10 12:00:00,596,3157,30.00,0,0
"""


@pytest.mark.parametrize("compressed", [False, True])
def test_the_last_weeks_of_a_csv_are_loaded_with_their_labels(
    tmp_path: Path, compressed: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / ("tx.csv.gz" if compressed else "tx.csv")
    source.write_bytes(gzip.compress(CSV.encode()) if compressed else CSV.encode())
    main(["--csv", str(source), "--state-dir", str(tmp_path / "state")])
    assert "loaded 3 payments" in capsys.readouterr().out  # the first is 39 days older
    main(["--csv", str(source), "--state-dir", str(tmp_path / "state")])  # again: nothing new
    assert "loaded 0 payments" in capsys.readouterr().out

    store = EmbeddedHistory(tmp_path / "state" / "fraud-history.db")
    store.open_now()
    assert set(store.index.payments) == {2, 3, 4}
    assert store.index.payments[3].payment.customer_id == "card,7"
    assert [store.index.payments[i].fraud for i in (2, 3, 4)] == [True, None, False]
    windows = store.index.windows(store.index.payments[4].payment)
    assert windows.terminal_nb_tx == (0, 0, 0)  # terminal 3157 is new
    later = store.index.payments[2].payment
    assert store.index.windows(later).customer_nb_tx == (1, 1, 1)


@pytest.mark.anyio
async def test_the_same_command_loads_into_redis(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tx.csv"
    source.write_text(CSV)
    await asyncio.to_thread(main, ["--csv", str(source), "--store", redis_url])
    assert "loaded 3 payments into redis://127.0.0.1:" in capsys.readouterr().out
    store = RedisHistory(redis_url)
    await store.open()
    card = await store.view("customer", "card,7", 5)
    assert card is not None and card.newest[0].payment.amount == 20.5
    terminal = await store.view("terminal", "3156", 5)
    assert terminal is not None and [k.fraud for k in terminal.newest] == [None, True]
    await store.close()
