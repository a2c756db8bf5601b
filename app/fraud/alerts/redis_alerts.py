"""The Redis history's alert queue: every change one atomic script (`redis_scripts.py`), so
replicas sharing the history share one queue."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
from redis.exceptions import RedisError

from app.errors import AlertNotFound, AlertResolved, FreezeConflict
from app.fraud.alerts import redis_scripts
from app.fraud.alerts.records import (
    Alert,
    AlertCounts,
    AlertStatus,
    AlertSummary,
    FlaggedPayment,
    Freeze,
    Outcome,
    QueuePosition,
    Resolution,
    now_us,
)
from app.fraud.history.records import TransactionId, id_candidates, id_text

if TYPE_CHECKING:
    from app.fraud.history.redis_store import RedisHistory


class RedisAlerts:
    def __init__(self, history: RedisHistory) -> None:
        self.history = history
        self.prefix = history.prefix
        script = history.client.register_script
        self._flag = script(redis_scripts.FLAG)
        self._page = script(redis_scripts.PAGE)
        self._get = script(redis_scripts.GET)
        self._resolve = script(redis_scripts.RESOLVE)
        self._freeze = script(redis_scripts.FREEZE)
        self._unfreeze = script(redis_scripts.UNFREEZE)
        self._frozen = script(redis_scripts.FROZEN)
        self._freeze_of = script(redis_scripts.FREEZE_OF)
        self._counts = AlertCounts(0, 0, 0, 0, 0)

    def counts(self) -> AlertCounts:
        return self._counts

    async def refresh(self) -> None:
        """Read the counts (with the history's size, every check)."""
        p = self.prefix
        async with self.history.client.pipeline(transaction=False) as pipe:
            pipe.get(p + "alert:next")
            pipe.zcard(p + "alerts:open")
            pipe.get(p + "alerts:fraud")
            pipe.get(p + "alerts:genuine")
            pipe.hlen(p + "frozen")
            opened, open_now, fraud, genuine, frozen = await pipe.execute()
        self._counts = AlertCounts(
            int(opened or 0), int(open_now), int(fraud or 0), int(genuine or 0), int(frozen)
        )

    async def flag(self, flagged: Sequence[FlaggedPayment]) -> int:
        if not flagged:
            return 0
        args: list[Any] = [self.prefix, now_us()]
        for item in flagged:
            p = item.payment
            args += [id_text(p.transaction_id), id_text(p.customer_id)]
            args += [repr(item.probability), orjson.dumps(item.as_stored())]
        opened: int = await self.history.call(self._flag, args)
        return opened

    async def page(
        self, status: AlertStatus, limit: int, after: QueuePosition | None
    ) -> list[AlertSummary]:
        cursor = ["", ""] if after is None else [repr(after.score), after.alert_id]
        reply = await self.history.call(self._page, [self.prefix, status, limit, *cursor])
        return [_summary(int(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    async def get(self, alert_id: int) -> Alert | None:
        reply = await self.history.call(self._get, [self.prefix, alert_id])
        if not reply:
            return None
        fields, flagged, trail = reply
        return Alert(
            _summary(alert_id, fields),
            [orjson.loads(text) for text in flagged],
            [orjson.loads(text) for text in trail],
        )

    async def resolve(self, alert_id: int, outcome: Outcome, note: str, by: str | None) -> Alert:
        at_us = now_us()
        resolution = {"outcome": outcome, "note": note, "by": by, "at_us": at_us}
        resolved = orjson.dumps({"event": "resolved", **resolution})
        freeze, frozen = b"", b""
        if outcome == "fraud":
            freeze = _freeze_value(alert_id, at_us, by, note)
            frozen = orjson.dumps({"event": "card_frozen", "by": by, "at_us": at_us})
        args = [self.prefix, alert_id, outcome, orjson.dumps(resolution), resolved, freeze, frozen]
        verdict = await self.history.call(self._resolve, args)
        if verdict == b"unknown":
            raise AlertNotFound(f"no alert {alert_id}")
        if verdict == b"resolved":
            raise AlertResolved(f"alert {alert_id} was resolved before")
        await self._refresh_quietly()
        alert = await self.get(alert_id)
        assert alert is not None
        return alert

    async def freeze(
        self, customer_id: TransactionId, note: str, by: str | None, alert_id: int | None = None
    ) -> Freeze:
        at_us = now_us()
        value = _freeze_value(alert_id, at_us, by, note)
        args = [self.prefix, id_text(customer_id), value]
        if not await self.history.call(self._freeze, args):
            raise FreezeConflict(f"card {customer_id!r} is frozen already")
        await self._refresh_quietly()
        return Freeze(customer_id, at_us, by, alert_id, note)

    async def unfreeze(self, raw_id: str, by: str | None) -> Freeze | None:
        event = orjson.dumps({"event": "card_unfrozen", "by": by, "at_us": now_us()})
        candidates = [id_text(c) for c in id_candidates(raw_id)]
        reply = await self.history.call(self._unfreeze, [self.prefix, event, *candidates])
        if not reply:
            return None
        await self._refresh_quietly()
        return _freeze(reply[0], reply[1])

    async def freeze_of(self, customer_id: TransactionId) -> Freeze | None:
        card = id_text(customer_id)
        value = await self.history.call(self._freeze_of, [self.prefix, card])
        return None if value is None else _freeze(card.encode(), value)

    async def frozen(self, limit: int) -> list[Freeze]:
        kept = await self.history.call(self._frozen, [self.prefix])
        freezes = [_freeze(kept[i], kept[i + 1]) for i in range(0, len(kept), 2)]
        return sorted(freezes, key=lambda f: -f.at_us)[:limit]

    async def _refresh_quietly(self) -> None:
        """The counts after a change; a failure here is not the change's."""
        with contextlib.suppress(RedisError):
            await self.refresh()


def _summary(alert_id: int, fields: list[bytes | None]) -> AlertSummary:
    card, status, score, opened, payments, resolution = fields
    assert card is not None and status is not None and score is not None
    return AlertSummary(
        alert_id,
        orjson.loads(card),
        status.decode(),  # type: ignore[arg-type]
        float(score),
        int(opened or 0),
        int(payments or 0),
        None if resolution is None else Resolution(**orjson.loads(resolution)),
    )


def _freeze_value(alert_id: int | None, at_us: int, by: str | None, note: str) -> bytes:
    head = b"" if alert_id is None else str(alert_id).encode()
    return head + b"\0" + orjson.dumps({"at_us": at_us, "by": by, "note": note})


def _freeze(card: bytes, value: bytes) -> Freeze:
    head, _, text = value.partition(b"\0")
    stored = orjson.loads(text)
    alert_id = int(head) if head else None
    return Freeze(orjson.loads(card), stored["at_us"], stored["by"], alert_id, stored["note"])
