"""The window features of the history, on small hand-made histories whose answers can be
counted on the fingers: the benchmark's definitions, edge by edge."""

from __future__ import annotations

import calendar
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.fraud.history.records import DAY_US, Payment, event_time_us
from app.fraud.history.windows import HistoryIndex, sortable_id, tie_key

T0 = event_time_us(datetime(2018, 6, 1, 12, 0, 0))


def pay(tid: int | str, customer: int, terminal: int, amount: float, days: float) -> Payment:
    return Payment(tid, customer, terminal, amount, T0 + round(days * DAY_US))


def test_a_new_card_and_terminal_have_an_empty_history() -> None:
    index = HistoryIndex()
    payment = pay(1, 7, 9, 42.0, 0)
    index.add(payment)
    windows = index.windows(payment)
    assert windows.customer_nb_tx == (1, 1, 1)
    assert windows.customer_avg_amount == (42.0, 42.0, 42.0)
    assert windows.terminal_nb_tx == (0, 0, 0) and windows.terminal_risk == (0.0, 0.0, 0.0)


def test_customer_windows_are_half_open_and_include_the_payment() -> None:
    index = HistoryIndex()
    history = [pay(1, 7, 9, 10.0, -30), pay(2, 7, 9, 20.0, -29.5), pay(3, 7, 9, 30.0, -7),
               pay(4, 7, 9, 40.0, -1), pay(5, 7, 9, 50.0, -0.5)]  # fmt: skip
    for payment in history:
        index.add(payment)
    now = pay(6, 7, 9, 60.0, 0)
    index.add(now)
    windows = index.windows(now)
    # Exactly N days before is out of (t - N days, t]: day -1, day -7 and day -30 here.
    assert windows.customer_nb_tx == (2, 3, 5)
    assert windows.customer_avg_amount == (55.0, 50.0, 40.0)


def test_ties_at_one_instant_are_ordered_by_transaction_id() -> None:
    index = HistoryIndex()
    first, second = pay(11, 7, 9, 10.0, 0), pay(12, 7, 9, 30.0, 0)
    index.add(second)  # recorded first, yet later in the order
    index.add(first)
    assert index.windows(first).customer_nb_tx == (1, 1, 1)
    assert index.windows(second).customer_nb_tx == (2, 2, 2)
    assert tie_key(2) < tie_key(10) < tie_key("10") < tie_key("a")


def test_terminal_windows_look_a_week_back_and_count_labels() -> None:
    index = HistoryIndex()
    for i, days in enumerate([-7.5, -8, -9, -13.9, -20, -36.9, -37.1, -6.9]):
        index.add(pay(100 + i, 1000 + i, 9, 1.0, days))
    index.set_label(101, True)  # day -8
    index.set_label(104, True)  # day -20
    index.set_label(104, False)  # corrected
    index.set_label(105, True)  # day -36.9
    now = pay(1, 7, 9, 5.0, 0)
    index.add(now)
    windows = index.windows(now)
    # (t-8, t-7]: -7.5 (and -8 is out); (t-14, t-7]: -7.5, -8, -9, -13.9; (t-37, t-7]: all
    # but -37.1 and -6.9 (not yet a week old, whatever its label says).
    assert windows.terminal_nb_tx == (1, 4, 6)
    assert windows.terminal_risk == (0.0, pytest.approx(1 / 4), pytest.approx(2 / 6))


def test_a_late_payment_takes_its_place_without_rescoring_others() -> None:
    index = HistoryIndex()
    now = pay(2, 7, 9, 10.0, 0)
    index.add(now)
    late = pay(1, 7, 9, 30.0, -0.5)
    index.add(late)
    assert index.windows(late).customer_nb_tx == (1, 1, 1)
    assert index.windows(now).customer_avg_amount[0] == 20.0  # as a later request would see


def test_forgetting_old_payments_and_undoing_one() -> None:
    index = HistoryIndex()
    for i, days in enumerate([-40, -38, -2]):
        index.add(pay(i, 7, 9, 1.0, days))
    assert len(index.drop_before(T0 - 37 * DAY_US)) == 2
    assert set(index.payments) == {2}
    index.remove(2)
    assert not index.payments and not index.customers[7].ids and not index.terminals[9].ids


@given(st.lists(st.one_of(st.integers(), st.text()), unique=True, min_size=2))
def test_ids_written_for_a_bytewise_store_sort_as_ties_do(ids: list[int | str]) -> None:
    """Redis orders equal-time members by their bytes: the head `sortable_id NUL ...` must
    order ids as `tie_key` does, whatever follows it."""
    by_tie = sorted(ids, key=tie_key)
    by_bytes = sorted(ids, key=lambda i: (sortable_id(i) + "\0~").encode())
    assert by_bytes == by_tie


@pytest.mark.parametrize(
    "stamp",
    [
        "2018-09-01T10:00:00",
        "2018-09-01T10:00:00.000001",
        "2018-09-01T10:00:00+02:00",
        "2018-09-01T10:00:00.5-05:30",
        "1969-12-31T23:59:59.999999",
    ],
)
def test_event_time_is_exact_microseconds_since_the_epoch_in_utc(stamp: str) -> None:
    timestamp = datetime.fromisoformat(stamp)
    whole_seconds = calendar.timegm(timestamp.utctimetuple())  # no offset: read as UTC
    assert event_time_us(timestamp) == whole_seconds * 1_000_000 + timestamp.microsecond
