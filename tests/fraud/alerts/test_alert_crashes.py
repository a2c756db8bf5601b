"""A resolution is one transaction of the store: a failure or a crash between labelling the
payments and freezing the card leaves each alert resolved with all of it, or open with
none of it. Real faults: a SQLite write that fails half-way, a process killed while it
resolves, a Redis killed while it is asked to."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.errors import StoreUnavailable
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore
from tests.fraud.alerts.test_alert_stores import flagged, pay
from tests.redis_server import RedisServer

pytestmark = pytest.mark.anyio

CARDS = 600  # one alert each, of three payments
# The kill comes after this many resolutions: far from the end, so that it lands while the
# work goes on however fast the machine is.
KILL_AFTER = 40
REPO_ROOT = Path(__file__).resolve().parents[3]


async def open_alerts(store: HistoryStore) -> list[int]:
    """An alert of three flagged payments for each of `CARDS` cards; their ids."""
    payments = [
        pay(card * 10 + i, card=card, days=i / 10) for card in range(CARDS) for i in range(3)
    ]
    await store.persist(await store.record(payments))
    await store.alerts.flag([flagged(p, 0.5 + p.customer_id / 1000) for p in payments])
    return [a.id for a in await store.alerts.page("open", CARDS, None)]


async def half_done(store: HistoryStore, alert_ids: list[int]) -> tuple[int, list[str]]:
    """How many alerts are resolved, and what is wrong with any: a resolved alert must
    have every payment labelled with its outcome (and for fraud its card frozen); an open
    one no label and no freeze."""
    resolved, problems = 0, []
    for alert_id in alert_ids:
        alert = await store.alerts.get(alert_id)
        assert alert is not None
        card = alert.summary.customer_id
        view = await store.view("customer", str(card), 10)
        assert view is not None
        labels = {k.payment.transaction_id: k.fraud for k in view.newest}
        ids = [f["transaction_id"] for f in alert.flagged]
        frozen = await store.alerts.freeze_of(card) is not None
        resolution = alert.summary.resolution
        if resolution is None:
            if any(labels[i] is not None for i in ids) or frozen:
                problems.append(f"alert {alert_id} open, yet labelled or frozen")
            continue
        resolved += 1
        fraud = resolution.outcome == "fraud"
        if any(labels[i] is not fraud for i in ids) or frozen != fraud:
            problems.append(f"alert {alert_id} {resolution.outcome}, labels {labels}, {frozen}")
    return resolved, problems


async def test_a_resolution_failing_between_labels_and_freeze_leaves_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    store = EmbeddedHistory(path)
    await store.open()
    await store.persist(await store.record([pay(1), pay(2, days=0.1)]))
    await store.alerts.flag([flagged(pay(1), 0.6), flagged(pay(2, days=0.1), 0.95)])
    (alert,) = await store.alerts.page("open", 10, None)
    # The freeze is the resolution's last write: make it fail, as a full disk would.
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TRIGGER no_freeze BEFORE INSERT ON frozen_cards "
            "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"
        )
    with pytest.raises(StoreUnavailable):
        await store.alerts.resolve(alert.id, "fraud", "", "alice")
    assert await half_done(store, [alert.id]) == (0, [])  # in memory
    (later,) = await store.record([pay(3, days=0.2)])
    assert not later.frozen
    await store.close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TRIGGER no_freeze")
    reopened = EmbeddedHistory(path)
    await reopened.open()
    assert await half_done(reopened, [alert.id]) == (0, [])  # on disk
    await reopened.alerts.resolve(alert.id, "fraud", "", "alice")
    assert await half_done(reopened, [alert.id]) == (1, [])
    await reopened.close()


_RESOLVER = """
import asyncio, sys
from pathlib import Path
from app.fraud.history.embedded import EmbeddedHistory

async def main():
    store = EmbeddedHistory(Path(sys.argv[1]))
    await store.open()
    for n, alert_id in enumerate(map(int, sys.argv[2:])):
        await store.alerts.resolve(alert_id, "fraud" if n % 2 else "genuine", "", "bot")
        print(alert_id, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_a_process_killed_while_it_resolves_leaves_no_half_resolved_alert(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    store = EmbeddedHistory(path)
    await store.open()
    alert_ids = await open_alerts(store)
    await store.close()
    with subprocess.Popen(
        [sys.executable, "-c", _RESOLVER, str(path), *map(str, alert_ids)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
    ) as resolver:
        assert resolver.stdout is not None
        for _ in range(KILL_AFTER):
            assert resolver.stdout.readline(), "the resolver stopped early"
        resolver.send_signal(signal.SIGKILL)
    reopened = EmbeddedHistory(path)
    await reopened.open()
    resolved, problems = await half_done(reopened, alert_ids)
    await reopened.close()
    assert problems == []
    assert KILL_AFTER <= resolved < CARDS


async def test_a_redis_killed_while_alerts_are_resolved_keeps_none_half_resolved(
    own_redis: RedisServer,
) -> None:
    own_redis.start()
    store = RedisHistory(own_redis.url)
    await store.open()
    alert_ids = await open_alerts(store)
    done: list[int] = []

    async def resolve_all() -> None:
        for n, alert_id in enumerate(alert_ids):
            try:
                await store.alerts.resolve(alert_id, "fraud" if n % 2 else "genuine", "", "bot")
            except StoreUnavailable:
                return
            done.append(alert_id)

    resolving = asyncio.create_task(resolve_all())
    while len(done) < KILL_AFTER:
        await asyncio.sleep(0.001)
    own_redis.stop(kill=True)
    await resolving
    own_redis.start()
    started = time.monotonic()
    while store.problem is not None or time.monotonic() - started < 0.1:
        await store.check()
        await asyncio.sleep(0.05)
    resolved, problems = await half_done(store, alert_ids)
    await store.close()
    assert problems == []
    assert len(done) <= resolved < CARDS  # every acknowledged resolution kept


async def test_a_resolution_run_twice_by_a_retry_is_one_resolution(redis_url: str) -> None:
    """redis-py sends a script again when the connection drops after Redis ran it: the
    second run must answer as the first did, not as another analyst's conflict."""
    import redis.asyncio as aioredis

    from app.fraud.alerts import redis_scripts

    store = RedisHistory(redis_url)
    await store.open()
    await store.persist(await store.record([pay(1)]))
    await store.alerts.flag([flagged(pay(1), 0.95)])
    (alert,) = await store.alerts.page("open", 10, None)
    resolution = b'{"outcome":"fraud","note":"","by":"alice","at_us":1}'
    freeze = f"{alert.id}\0".encode() + b'{"at_us":1,"by":"alice","note":""}'
    args = [store.prefix, alert.id, "fraud", resolution, b"{}", freeze, b"{}"]
    client = aioredis.Redis.from_url(redis_url)
    resolve = client.register_script(redis_scripts.RESOLVE)
    assert await resolve(keys=[], args=args) == b"ok"
    assert await resolve(keys=[], args=args) == b"ok"  # the same resolution again
    other = [*args[:3], resolution.replace(b"alice", b"bob"), *args[4:]]
    assert await resolve(keys=[], args=other) == b"resolved"
    await client.aclose()
    assert await half_done(store, [alert.id]) == (1, [])
    await store.close()
