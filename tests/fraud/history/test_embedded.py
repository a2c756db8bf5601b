"""The embedded store on a real SQLite file: durable across reopening and a killed
process, idempotent on transaction ids, labels, retention, and an unwritable disk."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from app.errors import PaymentConflict, StoreUnavailable, ValidationFailed
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import DAY_US, Payment, event_time_us

T0 = event_time_us(datetime(2018, 6, 1, 12, 0, 0))


def pay(tid: int | str, customer: int | str = 7, terminal: int = 9, days: float = 0) -> Payment:
    return Payment(tid, customer, terminal, 10.0 + len(str(tid)), T0 + round(days * DAY_US))


def opened(path: Path) -> EmbeddedHistory:
    store = EmbeddedHistory(path)
    store.open()
    return store


def test_a_recorded_batch_is_there_after_reopening(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    recorded = store.record([pay(2, days=0), pay(1, days=-1), pay("card-x", customer="c")])
    assert [r.payment.transaction_id for r in recorded] == [2, 1, "card-x"]
    windows = recorded[0].windows
    assert windows is not None and windows.customer_nb_tx == (1, 2, 2)  # sees the earlier one
    assert store.label([(1, True)]) == ["applied"]
    store.close()

    again = opened(tmp_path / "history.db")
    assert set(again.index.payments) == {1, 2, "card-x"}
    assert again.index.payments[1].fraud is True and again.index.payments[2].fraud is None
    # A week and a half later, terminal 9's windows hold day 0 (two payments) and day -1
    # (the fraud) from 7 days on.
    later = again.index.windows(pay(3, days=7.5))
    assert later.terminal_nb_tx == (2, 3, 3)
    assert later.terminal_risk == (0.0, pytest.approx(1 / 3), pytest.approx(1 / 3))


def test_the_same_payment_again_is_not_recorded_twice(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    store.record([pay(1)])
    store.save_answers({1: b'{"fraud_probability":0.5}'})
    retry = store.record([pay(1), pay(2, days=0.1)])
    assert retry[0].windows is None and retry[0].earlier_answer == b'{"fraud_probability":0.5}'
    assert retry[1].windows is not None and retry[1].windows.customer_nb_tx == (2, 2, 2)
    assert len(store.index.payments) == 2
    with pytest.raises(PaymentConflict, match="recorded before with other content"):
        store.record([Payment(1, 7, 9, 99.0, T0)])
    with pytest.raises(PaymentConflict):
        store.record([pay(5), Payment(5, 8, 9, 1.0, T0)])  # within one batch
    assert 5 not in store.index.payments


def test_labels_say_what_they_did(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    store.record([pay(1), pay(2)])
    assert store.label([(1, True), (1, True), (2, False), (3, True), (1, False)]) == [
        "applied", "unchanged", "applied", "unknown", "applied"
    ]  # fmt: skip


def test_history_older_than_the_retention_is_refused_and_pruned(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    store.record([pay(1, days=-40), pay(2, days=-10), pay(3, days=0)])
    with pytest.raises(ValidationFailed, match="older than the history keeps"):
        store.record([pay(4, days=-38)])
    assert store.prune() == 1
    store.close()
    assert set(opened(tmp_path / "history.db").index.payments) == {2, 3}


def test_a_full_disk_answers_unavailable_and_keeps_nothing(tmp_path: Path) -> None:
    store = opened(tmp_path / "history.db")
    store.record([pay(1)])
    db = store.connection()
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreUnavailable, match="could not be written"):
        store.record([pay(10_000 + i, customer=i) for i in range(2000)])
    assert set(store.index.payments) == {1}
    assert store.index.windows(pay(2)).customer_nb_tx == (1, 1, 1)


def test_a_directory_that_cannot_be_created_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="cannot be opened"):
        EmbeddedHistory(tmp_path / "file" / "history.db").open()


WRITER = """
import sys
from pathlib import Path
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import Payment
store = EmbeddedHistory(Path(sys.argv[1]))
store.open()
for i in range(100_000):
    store.record([Payment(i, i % 50, i % 7, 1.0, 1_500_000_000_000_000 + i)])
    print(i, flush=True)
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
