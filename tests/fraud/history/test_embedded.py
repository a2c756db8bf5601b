"""What only the embedded store has: a SQLite file that survives a killed process, and a
disk that can fill up or refuse. (What both stores do is in `test_stores.py`.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from app.errors import StoreUnavailable
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import DAY_US, Payment, event_time_us

T0 = event_time_us(datetime(2018, 6, 1, 12, 0, 0))


def pay(tid: int | str, customer: int | str = 7, terminal: int = 9, days: float = 0) -> Payment:
    return Payment(tid, customer, terminal, 10.0 + len(str(tid)), T0 + round(days * DAY_US))


def opened(path: Path) -> EmbeddedHistory:
    store = EmbeddedHistory(path)
    store.open_now()
    return store


@pytest.mark.anyio
async def test_a_full_disk_answers_unavailable_and_keeps_nothing(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    await store.persist(await store.record([pay(1)]))
    db = store.connection()
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    many = await store.record([pay(10_000 + i, customer=i) for i in range(2000)])
    other = await store.record([pay(2, days=0.1)])  # another request, in the same write
    assert len(store.index.payments) == 2002  # counted in windows before they are written
    with pytest.raises(StoreUnavailable, match="could not be written"):
        await store.persist(many)
    with pytest.raises(StoreUnavailable, match="could not be written"):
        await store.persist(other)
    assert set(store.index.payments) == {1}
    assert store.newest_us == pay(1).time_us
    assert store.index.windows(pay(3)).customer_nb_tx == (1, 1, 1)


@pytest.mark.anyio
async def test_one_write_for_every_payment_recorded_since_the_last(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    first = await store.record([pay(1)])
    second = await store.record([pay(2, days=0.1), pay(3, customer=8)])
    retry = await store.record([pay(1)])  # not written yet: its answer waits for that write
    await store.forget([3])  # its request failed before the write
    written_before = store.connection().total_changes
    await store.persist(first)
    assert store.connection().total_changes == written_before + 2  # 1 and 2, not 3
    await store.persist(second)
    await store.persist(retry)  # the same write: nothing more
    assert store.connection().total_changes == written_before + 2
    await store.close()
    assert set(opened(tmp_path / "history.db").index.payments) == {1, 2}


@pytest.mark.anyio
async def test_a_label_that_comes_before_the_write_is_written(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    recorded = await store.record([pay(1)])
    assert await store.label([(1, True)]) == ["applied"]
    await store.persist(recorded)
    store.close_now()
    assert opened(tmp_path / "history.db").index.payments[1].fraud is True


def test_a_directory_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="cannot be opened"):
        EmbeddedHistory(tmp_path / "file" / "history.db").open_now()


WRITER = """
import asyncio
import sys
from pathlib import Path
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import Payment

async def main():
    store = EmbeddedHistory(Path(sys.argv[1]))
    await store.open()
    for i in range(100_000):
        recorded = await store.record([Payment(i, i % 50, i % 7, 1.0, 1_500_000_000_000_000 + i)])
        await store.persist(recorded)
        print(i, flush=True)

asyncio.run(main())
"""


def test_every_payment_recorded_before_a_kill_survives_it(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    answered = -1
    deadline = time.monotonic() + 30
    while answered < 300 and time.monotonic() < deadline:
        answered = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    writer.stdout.close()
    kept = opened(path).index.payments
    assert answered >= 300
    assert set(range(answered + 1)) <= set(kept)  # every answered payment, once
