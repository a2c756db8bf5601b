"""One suite for the alert queue of both history stores, each real (a SQLite file, a
redis-server): alerts gather a card's flagged payments, page by score, resolve once with
their labels and the card's freeze together, and survive a restart."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from app.errors import AlertNotFound, AlertResolved, FreezeConflict
from app.fraud.alerts.records import FlaggedPayment, QueuePosition
from app.fraud.history.records import DAY_US, Payment, event_time_us
from app.fraud.history.store import HistoryStore
from tests.fraud.conftest import StoreFactory

pytestmark = pytest.mark.anyio

T0 = event_time_us(datetime(2018, 6, 1, 12, 0, 0))
REASONS = [{"code": "amount", "text": "amount 900.00 is 9.0 times card 7's average"}]


def pay(tid: int | str, card: int | str = 7, days: float = 0) -> Payment:
    return Payment(tid, card, 9, 100.0, T0 + round(days * DAY_US))


def flagged(payment: Payment, score: float) -> FlaggedPayment:
    decision = "decline" if score >= 0.9 else "review"
    return FlaggedPayment(payment, score, decision, REASONS)


async def record_and_flag(store: HistoryStore, scores: dict[Payment, float]) -> int:
    await store.persist(await store.record(list(scores)))
    return await store.alerts.flag([flagged(p, s) for p, s in scores.items()])


async def test_a_cards_flagged_payments_gather_in_its_one_open_alert(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    opened = await record_and_flag(store, {pay(1): 0.6, pay(2, days=0.1): 0.95, pay(3, 8): 0.7})
    assert opened == 2
    again = await store.alerts.flag([flagged(pay(2, days=0.1), 0.95)])  # a client's retry
    assert again == 0
    page = await store.alerts.page("open", 10, None)
    assert [(a.customer_id, a.score, a.payments) for a in page] == [(7, 0.95, 2), (8, 0.7, 1)]
    alert = await store.alerts.get(page[0].id)
    assert alert is not None
    assert [f["transaction_id"] for f in alert.flagged] == [1, 2]
    assert alert.flagged[1]["reasons"] == REASONS and alert.flagged[1]["decision"] == "decline"
    assert [e["event"] for e in alert.trail] == ["opened", "flagged"]
    await store.check()  # Redis's counts are read with each check (every second)
    assert store.alerts.counts()[:2] == (2, 2)  # opened ever, open now


async def test_the_queue_pages_by_score_without_gaps_or_repeats(new_store: StoreFactory) -> None:
    store = await new_store()
    scores = [0.5, 0.9, 0.7, 0.9, 0.6, 0.9, 0.8]  # ties on 0.9: newest alert first
    await record_and_flag(store, {pay(i, card=100 + i): s for i, s in enumerate(scores)})
    seen, after = [], None
    while True:
        page = await store.alerts.page("open", 2, after)
        seen += page
        if len(page) < 2:
            break
        after = QueuePosition(page[-1].score, page[-1].id)
    assert [a.score for a in seen] == sorted(scores, reverse=True)
    ties = [a.id for a in seen if a.score == 0.9]
    assert ties == sorted(ties, reverse=True) and len(set(a.id for a in seen)) == len(scores)
    assert await store.alerts.page("resolved", 10, None) == []


async def test_resolving_as_fraud_labels_closes_and_freezes_at_once(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await record_and_flag(store, {pay(1): 0.6, pay(2, days=0.1): 0.95})
    (alert,) = await store.alerts.page("open", 10, None)
    resolved = await store.alerts.resolve(alert.id, "fraud", "called the holder", "alice")
    assert resolved.summary.status == "resolved"
    assert resolved.summary.resolution is not None
    assert resolved.summary.resolution.by == "alice"
    assert [e["event"] for e in resolved.trail][-2:] == ["resolved", "card_frozen"]
    view = await store.view("customer", "7", 10)
    assert view is not None and [k.fraud for k in view.newest] == [True, True]
    freeze = await store.alerts.freeze_of(7)
    assert freeze is not None and freeze.alert_id == alert.id and freeze.by == "alice"
    later = await store.record([pay(3, days=0.2), pay(4, card=8, days=0.2)])
    assert [r.frozen for r in later] == [True, False]
    with pytest.raises(AlertResolved):
        await store.alerts.resolve(alert.id, "genuine", "", "bob")
    with pytest.raises(AlertNotFound):
        await store.alerts.resolve(alert.id + 100, "fraud", "", "bob")
    await store.check()
    counts = store.alerts.counts()
    assert (counts.open, counts.resolved_fraud, counts.resolved_genuine, counts.frozen) == (
        0, 1, 0, 1
    )  # fmt: skip


async def test_a_genuine_alert_is_labelled_genuine_and_the_card_stays_open(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await record_and_flag(store, {pay(1): 0.6})
    (alert,) = await store.alerts.page("open", 10, None)
    await store.alerts.resolve(alert.id, "genuine", "travelling", None)
    view = await store.view("customer", "7", 10)
    assert view is not None and view.newest[0].fraud is False
    assert await store.alerts.freeze_of(7) is None
    # The card's next flagged payment opens a new alert: the old one is closed.
    assert await record_and_flag(store, {pay(2, days=1): 0.8}) == 1
    assert [a.id for a in await store.alerts.page("resolved", 10, None)] == [alert.id]


async def test_two_analysts_resolving_at_once_one_wins(new_store: StoreFactory) -> None:
    first, second = await new_store(), await new_store()  # two replicas on Redis
    await record_and_flag(first, {pay(1): 0.6})
    (alert,) = await first.alerts.page("open", 10, None)
    outcomes = await asyncio.gather(
        first.alerts.resolve(alert.id, "fraud", "", "alice"),
        second.alerts.resolve(alert.id, "genuine", "", "bob"),
        return_exceptions=True,
    )
    assert sum(isinstance(o, AlertResolved) for o in outcomes) == 1
    won = next(o for o in outcomes if not isinstance(o, BaseException))
    kept = await first.alerts.get(alert.id)
    assert kept is not None and kept.summary.resolution == won.summary.resolution


async def test_unfreezing_lifts_the_freeze_and_says_so_on_the_alert(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await record_and_flag(store, {pay(1, card="c-1"): 0.95})
    (alert,) = await store.alerts.page("open", 10, None)
    await store.alerts.resolve(alert.id, "fraud", "", "alice")
    assert [f.customer_id for f in await store.alerts.frozen(10)] == ["c-1"]
    lifted = await store.alerts.unfreeze("c-1", "bob")
    assert lifted is not None and lifted.alert_id == alert.id
    assert await store.alerts.unfreeze("c-1", "bob") is None
    assert await store.alerts.frozen(10) == []
    after = await store.alerts.get(alert.id)
    assert after is not None and after.trail[-1]["event"] == "card_unfrozen"
    assert after.trail[-1]["by"] == "bob"
    (later,) = await store.record([pay(2, card="c-1", days=1)])
    assert not later.frozen


async def test_a_card_frozen_by_hand_is_frozen_once(new_store: StoreFactory) -> None:
    store = await new_store()
    await store.record([pay(1, card=7)])
    freeze = await store.alerts.freeze(7, "reported stolen", "alice")
    assert freeze.alert_id is None
    with pytest.raises(FreezeConflict):
        await store.alerts.freeze(7, "again", "bob")
    # "7" in a URL names card 7 (an integer id), not a card "7".
    lifted = await store.alerts.unfreeze("7", "bob")
    assert lifted is not None and lifted.customer_id == 7


async def test_alerts_and_freezes_survive_a_restart(new_store: StoreFactory) -> None:
    store = await new_store()
    await record_and_flag(store, {pay(1): 0.95, pay(2, card=8): 0.6})
    page = await store.alerts.page("open", 10, None)
    await store.alerts.resolve(page[0].id, "fraud", "confirmed", "alice")
    await store.close()

    reopened = await new_store()
    assert [a.customer_id for a in await reopened.alerts.page("open", 10, None)] == [8]
    resolved = await reopened.alerts.get(page[0].id)
    assert resolved is not None and resolved.summary.resolution is not None
    assert resolved.summary.resolution.note == "confirmed"
    (later,) = await reopened.record([pay(3, days=1)])
    assert later.frozen
    await reopened.check()
    counts = reopened.alerts.counts()
    assert (counts.opened, counts.open, counts.resolved_fraud, counts.frozen) == (2, 1, 1, 1)


async def test_a_card_frozen_after_its_payment_was_recorded_raises_no_alert(
    new_store: StoreFactory,
) -> None:
    store = await new_store()
    await record_and_flag(store, {pay(1): 0.95})
    (later,) = await store.record([pay(2, days=0.1)])
    assert not later.frozen  # recorded before the freeze...
    (alert,) = await store.alerts.page("open", 10, None)
    await store.alerts.resolve(alert.id, "fraud", "", "alice")
    # ...and flagged after it, by a request that was still scoring it.
    assert await store.alerts.flag([flagged(pay(2, days=0.1), 0.97)]) == 0
    assert await store.alerts.page("open", 10, None) == []
