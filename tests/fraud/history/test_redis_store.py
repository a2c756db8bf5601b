"""What only the Redis store has: several clients (replicas) recording at once, and a Redis
that goes away and comes back. (What both stores do is in `test_stores.py`.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from app.errors import StoreUnavailable
from app.fraud.history.records import DAY_US, Payment
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.windows import HistoryIndex
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

T0 = 1_527_854_400_000_000  # 2018-06-01 12:00 UTC


async def test_two_replicas_recording_one_card_at_once_record_each_payment_once(
    redis_url: str,
) -> None:
    """Both send every payment (a client retrying through the other replica): each is
    recorded once, and the history ends as if one replica had recorded them in order."""
    replicas = [RedisHistory(redis_url), RedisHistory(redis_url)]
    for replica in replicas:
        await replica.open()
    payments = [Payment(i, 7, 9 + i % 2, 1.0 + i, T0 + i * DAY_US // 24) for i in range(200)]

    async def send(replica: RedisHistory, order: list[Payment]) -> list[bool]:
        news = []
        for start in range(0, len(order), 5):
            news += [r.new for r in await replica.record(order[start : start + 5])]
        return news

    first, second = await asyncio.gather(
        send(replicas[0], payments), send(replicas[1], payments[::-1])
    )
    assert [a + b for a, b in zip(first, second[::-1], strict=True)] == [1] * len(payments)
    reference = HistoryIndex()
    for payment in payments:
        reference.add(payment)
    view = await replicas[0].view("customer", "7", 1000)
    assert view is not None and len(view.newest) == len(payments)
    assert view.windows == reference.windows(payments[-1])
    for replica in replicas:
        await replica.close()


async def test_a_lost_redis_is_unavailable_and_back_at_once_when_it_returns(
    own_redis: RedisServer,
) -> None:
    store = RedisHistory(own_redis.url)
    with pytest.raises(StoreUnavailable):
        await store.open()  # not started yet
    assert store.problem is not None and "does not answer" in store.problem
    own_redis.start()
    await store.check()
    assert store.problem is None
    assert (await store.record([Payment(1, 7, 9, 5.0, T0)]))[0].new

    own_redis.stop(kill=True)
    with pytest.raises(StoreUnavailable, match="does not answer"):
        await store.record([Payment(2, 7, 9, 5.0, T0 + 1)])
    with pytest.raises(StoreUnavailable):
        await store.label([(1, True)])
    own_redis.start()
    back = time.monotonic()
    recorded = await store.record([Payment(2, 7, 9, 5.0, T0 + 1)])
    assert time.monotonic() - back < 2.0
    assert recorded[0].new and recorded[0].windows.customer_nb_tx == (2, 2, 2)  # 1 survived
    assert store.problem is None
    await store.close()


async def test_a_request_cancelled_while_waiting_records_nothing(redis_url: str) -> None:
    """Its payments wait for the round's script call (the embedded store records in memory
    without waiting, and its caller forgets what a cancelled request recorded)."""
    store = RedisHistory(redis_url)
    await store.open()
    left = asyncio.ensure_future(store.record([Payment(1, 7, 9, 11.0, T0)]))
    await asyncio.sleep(0)  # it waits for the round now
    left.cancel()
    kept = await store.record([Payment(2, 7, 9, 11.0, T0 + DAY_US // 10)])
    assert kept[0].windows.customer_nb_tx == (1, 1, 1)
    view = await store.view("customer", "7", 5)
    assert view is not None and [k.payment.transaction_id for k in view.newest] == [2]
    await store.close()
