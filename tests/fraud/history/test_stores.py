"""One suite for both history stores, each real: the embedded one on a SQLite file and the
Redis one on a real redis-server. They must answer alike, and compute every window as the
in-memory reference (`HistoryIndex`, proven equal to the offline features) does."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime

import pytest

from app.errors import PaymentConflict, ValidationFailed
from app.fraud.history.records import DAY_US, Payment, Windows, event_time_us
from app.fraud.history.windows import HistoryIndex
from tests.fraud.conftest import StoreFactory

pytestmark = pytest.mark.anyio

T0 = event_time_us(datetime(2018, 6, 1, 12, 0, 0))


def pay(
    tid: int | str, customer: int | str = 7, terminal: int | str = 9, days: float = 0
) -> Payment:
    return Payment(tid, customer, terminal, 10.0 + len(str(tid)), T0 + round(days * DAY_US))


async def test_a_batch_is_recorded_in_time_order_and_answered_in_request_order(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    recorded = await store.record([pay(2, days=0), pay(1, days=-1), pay("card-x", customer="c")])
    assert [r.payment.transaction_id for r in recorded] == [2, 1, "card-x"]
    assert all(r.new for r in recorded)
    assert recorded[0].windows.customer_nb_tx == (1, 2, 2)  # sees the earlier one
    assert recorded[0].windows.customer_avg_amount == (11.0, 11.0, 11.0)
    assert recorded[1].windows.customer_nb_tx == (1, 1, 1)
    new_card = recorded[2].windows
    assert new_card.customer_nb_tx == (1, 1, 1) and new_card.customer_avg_amount == (16.0,) * 3
    assert new_card.terminal_nb_tx == (0, 0, 0) and new_card.terminal_risk == (0.0, 0.0, 0.0)


async def test_what_was_recorded_is_there_after_a_restart(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record([pay(1, days=-1), pay(2)])
    assert await store.label([(1, True)]) == ["applied"]
    await store.close()
    again = await new_store()
    # A week and a half later terminal 9 holds day 0 and day -1 (the fraud) in its windows.
    later = (await again.record([pay(3, days=7.5)]))[0].windows
    assert later.customer_nb_tx == (1, 1, 3)
    assert later.terminal_nb_tx == (1, 2, 2)
    assert later.terminal_risk == (0.0, 0.5, 0.5)
    assert (await again.record([pay(1, days=-1)]))[0].new is False  # still known


async def test_a_retry_gets_its_first_answer_and_other_content_is_a_conflict(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record([pay(1)])
    store.keep_answers({1: b'{"fraud_probability":0.5}'})
    retry = await store.record([pay(1), pay(2, days=0.1)])
    assert retry[0].new is False and retry[0].earlier_answer == b'{"fraud_probability":0.5}'
    assert retry[1].new and retry[1].windows.customer_nb_tx == (2, 2, 2)
    with pytest.raises(PaymentConflict, match="recorded before with other content"):
        await store.record([Payment(1, 7, 9, 99.0, T0)])
    with pytest.raises(PaymentConflict):
        await store.record([pay(5), Payment(5, 8, 9, 1.0, T0)])  # within one batch
    with pytest.raises(PaymentConflict):
        await store.record([pay(6), Payment(1, 7, 9, 99.0, T0)])  # nothing of it is kept
    assert (await store.record([pay(5), pay(6)]))[0].new
    assert await store.view("customer", "8", 5) is None


async def test_labels_say_what_they_did_and_move_the_terminal_risk(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record([pay(1), pay(2)])
    assert await store.label([(1, True), (1, True), (2, False), (3, True), (1, False)]) == [
        "applied", "unchanged", "applied", "unknown", "applied"
    ]  # fmt: skip
    assert await store.label([(2, True)]) == ["applied"]
    week_later = (await store.record([pay(10, days=7.5)]))[0].windows
    assert week_later.terminal_nb_tx == (2, 2, 2) and week_later.terminal_risk[1] == 0.5


async def test_forget_undoes_a_record(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record([pay(1)])
    await store.record([pay(2, days=0.1), pay(3, customer=8)])
    await store.forget([2, 3])
    assert (await store.record([pay(4, days=0.2)]))[0].windows.customer_nb_tx == (2, 2, 2)
    assert await store.view("customer", "8", 5) is None
    assert (await store.record([pay(2, days=0.1)]))[0].new  # may be sent again


async def test_the_view_of_a_card_and_a_terminal(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record([pay(i, days=i / 10) for i in range(1, 6)])
    await store.record([pay("s", customer="7", terminal="9")])  # the string ids "7", "9"
    await store.label([(3, True)])
    card = await store.view("customer", "7", 2)
    assert card is not None and card.entity == 7
    assert [k.payment.transaction_id for k in card.newest] == [5, 4]
    assert card.newest[0].payment == pay(5, days=0.5) and card.newest[0].fraud is None
    assert card.windows.customer_nb_tx == (5, 5, 5)
    terminal = await store.view("terminal", "9", 10)
    assert terminal is not None and [k.fraud for k in terminal.newest][2] is True
    by_text = await store.view("customer", "x7", 1)
    assert by_text is None
    text_card = await store.view("terminal", "9", 10)
    assert text_card is not None and text_card.entity == 9
    assert (await store.view("customer", "card-none", 1)) is None


async def test_history_past_the_retention_is_refused_and_pruned(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record([pay(1, days=-40), pay(2, days=-10), pay(3, days=0)])
    with pytest.raises(ValidationFailed, match="older than the history keeps"):
        await store.record([pay(4, days=-38)])
    assert await store.prune() == 1
    assert await store.prune() == 0
    assert (await store.record([pay(1, days=-36)]))[0].new  # forgotten, so new again
    await store.check()  # the size is as last known: Redis's, as of the last check
    assert store.size().payments == 3 and store.size().newest_us == T0


async def test_a_bulk_load_keeps_labels_and_skips_known_ids(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record([pay(1, days=-2)])
    rows = [
        ("1", "7", "9", 99.0, T0, None),  # known: left as it is
        ("2", "7", "9", 20.0, T0 - 8 * DAY_US, 1),
        ('"x"', '"c"', "9", 30.0, T0 - 9 * DAY_US, 0),
    ]
    assert await store.load(rows) == 2
    await store.close()
    store = await new_store()
    windows = (await store.record([pay(3)]))[0].windows
    assert windows.customer_nb_tx == (1, 2, 3) and windows.customer_avg_amount[2] == 42 / 3
    assert windows.terminal_nb_tx == (0, 2, 2) and windows.terminal_risk == (0.0, 0.5, 0.5)


async def test_every_window_equals_the_reference_on_a_random_history(
    new_store: StoreFactory,
) -> None:
    """Ties at one instant, int and string ids, late payments, labels corrected."""
    store = await new_store()
    highs = known_frauds = 0
    reference = HistoryIndex()
    rng = random.Random(16)
    ids: list[int | str] = []
    for batch in range(60):
        payments = []
        for _ in range(rng.randint(1, 12)):
            tid: int | str = rng.choice([rng.randint(-(10**12), 10**12), f"t{rng.random()}"])
            minutes = rng.choice([0, rng.randint(0, 30 * 24 * 60)])  # many ties at 0
            customer: int | str = rng.choice([1, 2, "1", "card\x00z"])
            terminal: int | str = rng.choice([5, 6, "5"])
            amount = round(rng.uniform(1, 300) * rng.choice([1, 1, 1, 8]), 2)  # some high
            payments.append(Payment(tid, customer, terminal, amount, T0 + minutes * 60_000_000))
        recorded = await store.record(payments)
        for payment in payments:
            reference.add(payment)
            ids.append(payment.transaction_id)
        for payment, result in zip(payments, recorded, strict=True):
            assert_same(result.windows, reference.windows(payment))
            highs += result.windows.customer_nb_high_amount > 0
            known_frauds += result.windows.terminal_known_fraud_ages[0] > 0
        labels = [(rng.choice(ids), rng.random() < 0.3) for _ in range(rng.randint(0, 5))]
        await store.label(labels)
        for transaction_id, fraud in labels:
            reference.set_label(transaction_id, fraud)
        if batch % 20 == 19:
            await store.close()
            store = await new_store()
    assert highs > 10  # the high amounts were exercised, not only their absence
    assert known_frauds > 10  # and the terminals' known frauds


def assert_same(served: Windows, expected: Windows) -> None:
    assert served.customer_nb_tx == expected.customer_nb_tx
    assert served.terminal_nb_tx == expected.terminal_nb_tx
    assert served.customer_avg_amount == pytest.approx(expected.customer_avg_amount, rel=1e-12)
    assert served.terminal_risk == pytest.approx(expected.terminal_risk, rel=1e-12)
    # Summed in the same order everywhere: equal to the last bit.
    assert served.customer_amount_over_mean == expected.customer_amount_over_mean
    assert served.customer_nb_high_amount == expected.customer_nb_high_amount
    assert served.terminal_known_fraud_ages == expected.terminal_known_fraud_ages
    assert served.terminal_risk_last_known == expected.terminal_risk_last_known


async def test_concurrent_requests_are_written_together_and_fail_alone(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.record([pay(1)])
    results = await asyncio.gather(
        store.record([pay(2, days=0.1)]),
        store.record([Payment(1, 7, 9, 99.0, T0), pay(3, customer=8)]),  # a conflict
        store.record([pay(4, days=0.2), pay(2, days=0.1)]),  # 2 again: a retry
        return_exceptions=True,
    )
    assert isinstance(results[1], PaymentConflict)
    first, third = results[0], results[2]
    assert not isinstance(first, BaseException) and not isinstance(third, BaseException)
    assert first[0].new and first[0].windows.customer_nb_tx == (2, 2, 2)
    assert third[0].windows.customer_nb_tx == (3, 3, 3) and not third[1].new
    assert await store.view("customer", "8", 5) is None  # nothing of the failed request


async def test_a_preview_gives_the_windows_of_a_record_and_keeps_nothing(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await store.persist(await store.record([pay(1, days=-2), pay(2, days=-1, customer=8)]))
    await store.check()
    size = store.size().payments
    what_if = [pay(3), pay(4, days=0.5, customer=8)]
    previewed = await store.preview(what_if)
    await store.check()  # Redis: reads its count again
    assert store.size().payments == size
    view = await store.view("customer", "8", 10)
    assert view is not None and [k.payment.transaction_id for k in view.newest] == [2]
    recorded = await store.record(what_if)
    assert [r.windows for r in previewed] == [r.windows for r in recorded]
    with pytest.raises(PaymentConflict):
        await store.preview([Payment(3, 7, 9, 99.0, T0)])


async def test_the_history_features_at_their_edges(new_store: StoreFactory) -> None:
    """A mean of a fraction of a cent (the ratio's ceiling), earlier payments of nothing, an
    amount exactly at three times the mean and one over it: as worked out by hand."""
    store = await new_store()
    payments = [
        Payment(1, 7, 9, 1e-9, T0 - DAY_US),
        Payment(2, 7, 9, 1e9, T0),
        Payment(3, 8, 9, 0.0, T0 - DAY_US),
        Payment(4, 8, 9, 5.0, T0),
        *(Payment(10 + d, 6, 9, 10.0, T0 - (6 - d) * DAY_US) for d in range(3)),
        Payment(13, 6, 9, 90.0, T0 - 2 * DAY_US),  # mean 30 with it: exactly at the bar
        Payment(14, 6, 9, 5.0, T0),
        *(Payment(20 + d, 5, 9, 10.0, T0 - (6 - d) * DAY_US) for d in range(4)),
        Payment(24, 5, 9, 100.0, T0 - DAY_US),  # mean 28 with it: over the bar of 84
        Payment(25, 5, 9, 7.0, T0),
    ]
    recorded = await store.record(payments)
    features = {
        r.payment.transaction_id: (
            r.windows.customer_amount_over_mean,
            r.windows.customer_nb_high_amount,
        )
        for r in recorded
    }
    assert features[2] == (1e6, 0) and features[4] == (1.0, 0)
    assert features[13] == (9.0, 0) and features[14] == (5.0 / 30.0, 0)
    assert features[24] == (10.0, 0) and features[25] == (7.0 / 28.0, 1)


async def test_the_terminals_known_frauds_at_their_edges(new_store: StoreFactory) -> None:
    """Labels sent after the payments, windows' edges and one instant's ties, by hand."""
    store = await new_store()
    day = DAY_US
    earlier = [
        Payment(1, 1, 4, 5.0, T0 - 37 * day),  # exactly 37 days before: out
        Payment(2, 2, 4, 5.0, T0 - 36 * day),
        *(Payment(tid, 3, 4, 5.0, T0 - 10 * day) for tid in (33, 30, 32, 31)),  # one instant
        Payment(5, 5, 4, 5.0, T0 - 7 * day),  # exactly 7 days before: known
        Payment(6, 6, 4, 5.0, T0 - 6 * day),  # not known yet
    ]
    await store.record(earlier)
    assert await store.label([(1, True), (2, True), (30, True), (6, True)]) == ["applied"] * 4
    (scored,) = await store.record([Payment(9, 9, 4, 5.0, T0)])
    # Known: 2 (fraud), 30 (fraud), 31, 32, 33, 5; the last three 32, 33, 5: no fraud.
    assert scored.windows.terminal_known_fraud_ages == (36.0, 10.0)
    assert scored.windows.terminal_risk_last_known == 0.0
    await store.label([(5, True)])
    (again,) = await store.record([Payment(10, 9, 4, 5.0, T0)])
    assert again.windows.terminal_known_fraud_ages == (36.0, 7.0)
    assert again.windows.terminal_risk_last_known == 1 / 3
    (elsewhere,) = await store.record([Payment(11, 9, 8, 5.0, T0)])  # a new terminal
    assert elsewhere.windows.terminal_known_fraud_ages == (0.0, 0.0)
    assert elsewhere.windows.terminal_risk_last_known == 0.0
