"""The sentences of the history's own features, worked out by hand: the mean of the card's
earlier payments comes from its 30-day window, which counts the payment too; the terminal's
known frauds are those labelled of its payments 7 to 37 days before."""

from __future__ import annotations

from app.fraud.reasons import CODES, sentence

OVER = "CUSTOMER_ID_AMOUNT_OVER_MEAN_30DAY_WINDOW"
HIGH = "CUSTOMER_ID_NB_HIGH_AMOUNT_14DAY_WINDOW"


def values(amount: float, earlier: list[float], ratio: float, high: int = 0) -> dict:
    count = len(earlier) + 1
    return {
        "TX_AMOUNT": amount,
        "CUSTOMER_ID_NB_TX_30DAY_WINDOW": count,
        "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW": (sum(earlier) + amount) / count,
        OVER: ratio,
        HIGH: high,
    }


def test_codes_are_stable_names() -> None:
    assert CODES[OVER] == "customer_amount_over_mean_30d"
    assert CODES[HIGH] == "customer_high_amounts_14d"


def test_the_amount_against_the_cards_earlier_mean() -> None:
    v = values(300.0, [20.0, 40.0], 10.0, high=1)
    assert sentence(OVER, v, 5, None) == (
        "amount 300.00 is 10.0 times the mean of card 5's 2 earlier payments in 30 days (30.00)"
    )
    assert sentence(HIGH, v, 5, None) == (
        "card 5: 1 payment in the 14 days before over three times its 30-day mean of 30.00"
    )
    one = values(90.0, [45.0], 2.0)
    assert "this card's 1 earlier payment in 30 days (45.00)" in sentence(OVER, one, None, None)


def test_a_first_payment_and_earlier_payments_of_nothing() -> None:
    first = values(42.0, [], 1.0)
    assert sentence(OVER, first, 7, None) == (
        "amount 42.00, with no earlier payment of card 7 in 30 days to compare"
    )
    assert sentence(HIGH, first, 7, None) == (
        "card 7: 0 payments in the 14 days before over three times its 30-day mean"
    )
    zeros = values(80.0, [0.0, 0.0], 1.0)  # the ratio is 1 by definition: no "times"
    assert sentence(OVER, zeros, 7, None) == (
        "amount 80.00, where card 7's 2 earlier payments in 30 days came to 0.00"
    )
    nothing = values(0.0, [20.0, 40.0], 0.0)
    assert "amount 0.00 is 0.0 times the mean of card 7's 2 earlier" in sentence(
        OVER, nothing, 7, None
    )


FIRST = "TERMINAL_ID_FIRST_KNOWN_FRAUD_AGE_30DAY_WINDOW"
LAST = "TERMINAL_ID_LAST_KNOWN_FRAUD_AGE_30DAY_WINDOW"
RECENT = "TERMINAL_ID_RISK_LAST_3_KNOWN"


def test_the_terminals_known_frauds_in_words() -> None:
    v = {FIRST: 12.25, LAST: 7.5, RECENT: 2 / 3}
    assert CODES[FIRST] == "terminal_first_known_fraud_age_30d"
    assert CODES[RECENT] == "terminal_risk_last_3_known"
    assert sentence(FIRST, v, None, 44) == (
        "terminal 44: its first known fraud of the 30 known days was 12.2 days ago"
    )
    assert sentence(LAST, v, None, None) == (
        "this terminal: its latest known fraud of the 30 known days was 7.5 days ago"
    )
    assert sentence(RECENT, v, None, 44) == (
        "terminal 44: 67% of its latest known transactions (up to 3, a week or more ago) were fraud"
    )
    assert sentence(FIRST, {FIRST: 0.0}, None, 44) == (
        "terminal 44: no known fraud in the 30 known days before"
    )
