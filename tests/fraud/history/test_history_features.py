"""The history's own features (beyond the benchmark's windows), on hand-made histories whose
answers are worked out by hand: computed online by the history and offline by `training/`,
and both equal to the hand's answer.

- amount over the mean of the card's earlier payments in (t - 30 days, t);
- how many of those in (t - 14 days, t) were over three times that mean;
- the terminal's known frauds (see `KNOWN` below).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.fraud.history.records import DAY_US, Payment, event_time_us
from app.fraud.history.windows import HistoryIndex

pd = pytest.importorskip("pandas")

START = datetime(2018, 6, 1, 12, 0, 0)
T0 = event_time_us(START)
OVER_MEAN = "CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"
HIGH = "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW"


def pay(tid: int, customer: int, amount: float, days: float) -> Payment:
    return Payment(tid, customer, 9, amount, T0 + round(days * DAY_US))


def offline_features(history: list[Payment], frauds: list[bool]) -> pd.DataFrame:
    """`training/`'s features of these payments, with these labels."""
    from training.fraud_data import add_features

    frame = pd.DataFrame(
        {
            "TRANSACTION_ID": [p.transaction_id for p in history],
            "TX_DATETIME": [START + timedelta(microseconds=p.time_us - T0) for p in history],
            "CUSTOMER_ID": [p.customer_id for p in history],
            "TERMINAL_ID": [p.terminal_id for p in history],
            "TX_AMOUNT": [p.amount for p in history],
            "TX_FRAUD": [int(fraud) for fraud in frauds],
        }
    )
    return add_features(frame)


def both_ways(history: list[Payment]) -> dict[int, tuple[float, float]]:
    """Per transaction id: (amount over mean, high amounts), online and offline checked
    equal."""
    index = HistoryIndex()
    for payment in history:
        index.add(payment)
    online = {
        p.transaction_id: (w.customer_amount_over_mean, w.customer_nb_high_amount)
        for p in history
        for w in [index.windows(p)]
    }
    offline = {
        int(row.TRANSACTION_ID): (getattr(row, OVER_MEAN), getattr(row, HIGH))
        for row in offline_features(history, [False] * len(history)).itertuples()
    }
    assert online == offline
    return online


def test_a_cards_first_payment_has_nothing_to_compare_with() -> None:
    features = both_ways([pay(1, 7, 42.0, 0), pay(2, 8, 10.0, -40), pay(3, 8, 99.0, 0)])
    assert features[1] == (1.0, 0)
    assert features[3] == (1.0, 0)  # its card's only other payment is 40 days old


def test_the_mean_is_of_earlier_payments_in_the_half_open_30_days() -> None:
    history = [pay(1, 7, 10.0, -30), pay(2, 7, 20.0, -29.5), pay(3, 7, 30.0, -7),
               pay(4, 7, 40.0, -1), pay(5, 7, 50.0, -0.5), pay(6, 7, 70.0, 0)]  # fmt: skip
    features = both_ways(history)
    # Day -30 exactly is out; the payment itself is out: (20 + 30 + 40 + 50) / 4 = 35.
    assert features[6] == (2.0, 0)
    assert features[2] == (2.0, 0)  # against payment 1 alone, half a day before it


def test_high_amounts_are_strictly_over_three_times_the_mean_in_14_days() -> None:
    history = [pay(i, 7, 10.0, -29 + i) for i in range(8)]  # days -29 to -22
    history += [
        pay(20, 7, 200.0, -14),  # over the bar, but exactly 14 days before: out
        pay(21, 7, 200.0, -10),  # over the bar: counted
        pay(22, 7, 180.0, -3),  # exactly at the bar: not over it
        pay(23, 7, 120.0, 0),
    ]
    features = both_ways(history)
    # Earlier: 8 x 10 + 200 + 200 + 180 = 660 over 11 payments, mean 60, bar 180.
    assert features[23] == (2.0, 1)


def test_payments_of_one_instant_are_earlier_by_transaction_id() -> None:
    features = both_ways([pay(12, 7, 30.0, 0), pay(11, 7, 10.0, 0), pay(13, 7, 50.0, 0)])
    assert features[11] == (1.0, 0)
    assert features[12] == (3.0, 0)  # after 11 alone
    assert features[13] == (2.5, 0)  # after 11 and 12: mean 20


def test_the_ratio_has_a_ceiling_where_the_mean_is_a_fraction_of_a_cent() -> None:
    features = both_ways([pay(1, 7, 1e-9, -1), pay(2, 7, 1e9, 0), pay(3, 8, 0.0, -1),
                          pay(4, 8, 5.0, 0)])  # fmt: skip
    assert features[2] == (1e6, 0)  # 1e18 times, which float32 could not hold
    assert features[4] == (1.0, 0)  # over a mean of 0: no ratio to give


# The terminal's known frauds: within its known window (t - 37 days, t - 7 days], the days
# since its first and last payment labelled fraud (0: none), and the share of fraud among
# its last three payments there.
KNOWN = (
    "TERMINAL_ID_FIRST_KNOWN_FRAUD_AGE_30DAY_WINDOW",
    "TERMINAL_ID_LAST_KNOWN_FRAUD_AGE_30DAY_WINDOW",
    "TERMINAL_ID_RISK_LAST_3_KNOWN",
)


def at_terminal(tid: int, fraud: bool, days: float, terminal: int = 9) -> tuple[Payment, bool]:
    return Payment(tid, 100 + tid, terminal, 10.0, T0 + round(days * DAY_US)), fraud


def terminal_both_ways(history: list[tuple[Payment, bool]]) -> dict[int, tuple[float, ...]]:
    """Per transaction id, the three, online (labels known) and offline checked equal."""
    index = HistoryIndex()
    for payment, fraud in history:
        index.add(payment, fraud)
    online = {}
    for payment, _ in history:
        windows = index.windows(payment)
        online[payment.transaction_id] = (
            *windows.terminal_known_fraud_ages,
            windows.terminal_risk_last_known,
        )
    frame = offline_features([p for p, _ in history], [fraud for _, fraud in history])
    offline = {
        int(row["TRANSACTION_ID"]): tuple(row[c] for c in KNOWN) for _, row in frame.iterrows()
    }
    assert online == offline
    return online


def test_a_terminals_known_frauds_are_those_of_its_half_open_known_window() -> None:
    features = terminal_both_ways(
        [
            at_terminal(1, True, -37),  # exactly 37 days before: out
            at_terminal(2, True, -36.5),
            at_terminal(3, False, -20),
            at_terminal(4, True, -7),  # exactly 7 days before: known, in
            at_terminal(5, True, -6.5),  # not known yet: out
            at_terminal(10, False, 0),
        ]
    )
    assert features[10] == (36.5, 7.0, 2 / 3)  # the last three known: 2 (F), 3, 4 (F)
    assert features[1] == (0.0, 0.0, 0.0)  # the terminal's first payment: nothing known
    assert features[3] == (17.0, 16.5, 1.0)  # 1 and 2, both known (over 7 days before)
    assert features[4] == (30.0, 29.5, 2 / 3)  # from day -7, all three before are known


def test_a_terminal_with_no_known_fraud_and_one_with_fewer_than_three_known() -> None:
    features = terminal_both_ways(
        [
            at_terminal(1, False, -30, terminal=5),
            at_terminal(2, False, -10, terminal=5),
            at_terminal(3, False, 0, terminal=5),
            at_terminal(4, True, -12, terminal=6),
            at_terminal(5, False, 0, terminal=6),
        ]
    )
    assert features[3] == (0.0, 0.0, 0.0)
    assert features[5] == (12.0, 12.0, 1.0)  # one known payment, a fraud


def test_a_terminals_payments_of_one_instant_are_in_transaction_id_order() -> None:
    history = [at_terminal(1, True, -20)]
    # Recorded out of order; by id, 30 is the fraud and 31 to 33 the last three.
    history += [at_terminal(tid, tid == 30, -10) for tid in (33, 30, 32, 31)]
    features = terminal_both_ways([*history, at_terminal(40, False, 0)])
    assert features[40] == (20.0, 10.0, 0.0)
