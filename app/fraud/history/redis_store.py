"""The Redis history store, for replicas that share one history: every batch is one
atomic script call (`redis_scripts.py`), so two replicas recording one card's payments at
once see each other's in time order, and a retry is safe whatever was lost on the way.

When Redis is unreachable the store raises `StoreUnavailable` (503, Retry-After) and says
why in `problem`; every call tries the connection afresh, so service returns as soon as
Redis does. Durability is Redis's own: run it with an append-only file (`appendonly yes`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from app.errors import PaymentConflict, StoreUnavailable, ValidationFailed
from app.fraud.alerts.redis_alerts import RedisAlerts
from app.fraud.history import redis_scripts
from app.fraud.history.coalescing import GroupOutcome, RecordCoalescer
from app.fraud.history.records import (
    DAY_US,
    Payment,
    TransactionId,
    Windows,
    id_candidates,
    id_text,
)
from app.fraud.history.store import (
    EntityKind,
    EntityView,
    HistorySize,
    KnownPayment,
    LabelOutcome,
    LoadRow,
    Recorded,
)
from app.fraud.history.windows import sortable_id


class RedisHistory:
    def __init__(
        self, url: str, retention_days: int = 37, prefix: str = "deepserve:fraud:"
    ) -> None:
        self.url = url
        self.retention_us = retention_days * DAY_US
        self.prefix = prefix
        self.problem: str | None = None
        self._size = HistorySize(0, 0, None)
        # Short timeouts: a Redis that is gone must turn into a 503 well within a request's
        # deadline, not hang it. One immediate retry on another connection: after Redis
        # restarts, each pooled connection fails once. (Every script may run twice.)
        self.client = aioredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry=Retry(NoBackoff(), 1)
        )
        script = self.client.register_script
        self._record = script(redis_scripts.RECORD)
        self._forget = script(redis_scripts.FORGET)
        self._preview = script(redis_scripts.PREVIEW)
        self._label = script(redis_scripts.LABEL)
        self._view = script(redis_scripts.VIEW)
        self._prune = script(redis_scripts.PRUNE)
        self._load = script(redis_scripts.LOAD)
        self._coalescer = RecordCoalescer(self._record_groups, self.forget)
        self.alerts = RedisAlerts(self)

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    async def open(self) -> None:
        await self.check()
        if self.problem is not None:
            raise StoreUnavailable(self.problem)

    async def close(self) -> None:
        await self._coalescer.close()
        await self.client.aclose()

    async def check(self) -> None:
        try:
            await self.client.ping()
            await self._refresh_size()
            await self.alerts.refresh()
        except RedisError as exc:
            self.problem = f"the fraud history's Redis at {self.where} does not answer: {exc}"
            return
        self.problem = None

    async def record(self, payments: Sequence[Payment]) -> list[Recorded]:
        return await self._coalescer.record(payments)

    records_at_once = False  # every record is a round trip

    def record_now(self, payments: Sequence[Payment]) -> list[Recorded]:
        raise NotImplementedError("the Redis store records with `record`, a round trip")

    async def preview(self, payments: Sequence[Payment]) -> list[Recorded]:
        args: list[str | int] = [self.prefix, self.retention_us]
        for p in payments:
            transaction_id = id_text(p.transaction_id)
            head = f"{sortable_id(p.transaction_id)}\0{transaction_id}"
            args += [transaction_id, id_text(p.customer_id), id_text(p.terminal_id)]
            args += [repr(p.amount), p.time_us, head]
        reply = await self.call(self._preview, args)
        if reply[0] == b"conflict":
            raise _conflict(orjson.loads(reply[1]))
        if reply[0] == b"old":
            raise ValidationFailed(
                f"transaction {orjson.loads(reply[1])!r}: its timestamp is older than the "
                f"history keeps ({self.retention_us // DAY_US} days before the newest)",
                [{"field": "timestamp", "message": "older than the retention"}],
            )
        return [
            Recorded(p, _windows(reply[1 + 2 * i], p.amount), frozen=reply[2 + 2 * i] == 1)
            for i, p in enumerate(payments)
        ]

    async def persist(self, recorded: Sequence[Recorded]) -> None:
        """Nothing to do: `record` returns once Redis has the payments."""

    async def forget(self, transaction_ids: Sequence[TransactionId]) -> None:
        if transaction_ids:
            await self.call(self._forget, [self.prefix, *map(id_text, transaction_ids)])

    def keep_answers(self, answers: dict[TransactionId, bytes]) -> None:
        self._coalescer.keep_answers(answers)

    async def _record_groups(
        self, groups: list[Sequence[Payment]], answers: dict[TransactionId, bytes]
    ) -> list[GroupOutcome]:
        """Concurrent requests' payments, and the answers given since, in one script call."""
        args: list[str | int | bytes] = [self.prefix, self.retention_us, len(answers)]
        for transaction_id, answer in answers.items():
            args += [id_text(transaction_id), answer]
        sent: list[tuple[Sequence[Payment], list[Payment]]] = []
        outcomes: list[GroupOutcome | None] = []
        for payments in groups:
            unique: dict[TransactionId, Payment] = {}
            conflict = None
            for payment in payments:
                if unique.setdefault(payment.transaction_id, payment) != payment:
                    conflict = _conflict(payment.transaction_id)
            if conflict is not None:
                outcomes.append(conflict)
                continue
            outcomes.append(None)
            sent.append((payments, list(unique.values())))
            args.append(len(unique))
            for p in unique.values():
                transaction_id = id_text(p.transaction_id)
                head = f"{sortable_id(p.transaction_id)}\0{transaction_id}"
                args += [
                    transaction_id,
                    id_text(p.customer_id),
                    id_text(p.terminal_id),
                    repr(p.amount),
                    p.time_us,
                    head,
                ]
        reply = iter(await self.call(self._record, args))
        answered = iter([self._outcome(reply, payments, unique) for payments, unique in sent])
        return [outcome or next(answered) for outcome in outcomes]

    def _outcome(
        self, reply: Iterator[Any], payments: Sequence[Payment], unique: list[Payment]
    ) -> GroupOutcome:
        verdict = next(reply)
        if verdict == b"conflict":
            return _conflict(orjson.loads(next(reply)))
        if verdict == b"old":
            return ValidationFailed(
                f"transaction {orjson.loads(next(reply))!r}: its timestamp is older than the "
                f"history keeps ({self.retention_us // DAY_US} days before the newest)",
                [{"field": "timestamp", "message": "older than the retention"}],
            )
        results: dict[TransactionId, Recorded] = {}
        for payment in unique:
            new, answer = next(reply) == 1, next(reply)
            windows = _windows(next(reply), payment.amount)
            frozen = next(reply) == 1
            results[payment.transaction_id] = Recorded(
                payment, windows, new, answer or None, frozen=frozen
            )
        recorded = [results[p.transaction_id] for p in payments]
        # The same payment twice in one request: recorded once, the second is a retry.
        seen: set[TransactionId] = set()
        for i, r in enumerate(recorded):
            if r.payment.transaction_id in seen:
                recorded[i] = Recorded(r.payment, r.windows, new=False, frozen=r.frozen)
            seen.add(r.payment.transaction_id)
        return recorded

    async def label(self, labels: Sequence[tuple[TransactionId, bool]]) -> list[LabelOutcome]:
        if not labels:
            return []
        args = [self.prefix]
        for transaction_id, fraud in labels:
            args += [id_text(transaction_id), "1" if fraud else "0"]
        reply = await self.call(self._label, args)
        return [outcome.decode() for outcome in reply]

    async def view(self, kind: EntityKind, raw_id: str, limit: int) -> EntityView | None:
        candidates = [id_text(c) for c in id_candidates(raw_id)]
        letter = "c" if kind == "customer" else "k"
        reply = await self.call(self._view, [self.prefix, letter, limit, *candidates])
        if not reply:
            return None
        newest: list[KnownPayment] = []
        for at in range(2, len(reply), 2):
            payment, label = _payment(reply[at], reply[at + 1])
            newest.append(KnownPayment(payment, None if not label else label == b"1"))
        return EntityView(
            orjson.loads(reply[0]), _windows(reply[1], newest[0].payment.amount), newest
        )

    async def prune(self) -> int:
        """Whole days of event time: a day's payments go once all of it is past the
        retention (so up to a day more is kept; no window reaches that far)."""
        forgotten: int = await self.call(self._prune, [self.prefix, self.retention_us])
        await self.check()
        return forgotten

    async def load(self, rows: Sequence[LoadRow]) -> int:
        args: list[str | int | float] = [self.prefix]
        for transaction_id, customer, terminal, amount, time_us, fraud in rows:
            head = f"{sortable_id(orjson.loads(transaction_id))}\0{transaction_id}"
            label = "" if fraud is None else str(int(fraud))
            args += [transaction_id, customer, terminal, repr(amount), time_us, head, label]
        loaded: int = await self.call(self._load, args)
        await self._refresh_size()
        return loaded

    def size(self) -> HistorySize:
        return self._size

    async def _refresh_size(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.get(self.prefix + "count")
            pipe.get(self.prefix + "newest")
            pipe.info("memory")
            payments, newest, memory = await pipe.execute()
        self._size = HistorySize(
            int(payments or 0),
            memory.get("used_memory", 0),
            None if newest is None else int(newest),
        )

    async def call(self, script: Callable[..., Awaitable[Any]], args: Sequence[Any]) -> Any:
        try:
            reply = await script(keys=[], args=args)
        except RedisError as exc:
            self.problem = f"the fraud history's Redis at {self.where} does not answer: {exc}"
            raise StoreUnavailable(self.problem) from exc
        self.problem = None
        return reply


def _windows(text: bytes, amount: float) -> Windows:
    """The script's eighteen values: per window the card's count and amount sum, then the
    terminal's count and frauds, then the amount over the card's earlier mean and its high
    amounts, the days since the terminal's first and last known fraud, and the frauds among
    its last known payments with how many those are."""
    values = text.split()
    counts = (int(values[0]), int(values[2]), int(values[4]))
    sums = (float(values[1]), float(values[3]), float(values[5]))
    terminal = (int(values[6]), int(values[8]), int(values[10]))
    frauds = (int(values[7]), int(values[9]), int(values[11]))
    averages = [s / c if c else amount for s, c in zip(sums, counts, strict=True)]
    risks = [f / c if c else 0.0 for f, c in zip(frauds, terminal, strict=True)]
    return Windows(
        customer_nb_tx=counts,
        customer_avg_amount=(averages[0], averages[1], averages[2]),
        terminal_nb_tx=terminal,
        terminal_risk=(risks[0], risks[1], risks[2]),
        customer_amount_over_mean=float(values[12]),
        customer_nb_high_amount=int(values[13]),
        terminal_known_fraud_ages=(float(values[14]), float(values[15])),
        terminal_risk_last_known=int(values[16]) / int(values[17]) if int(values[17]) else 0.0,
    )


def _payment(transaction_id: bytes, record: bytes) -> tuple[Payment, bytes]:
    """A payment and its label from its record (`redis_scripts`' layout)."""
    customer, terminal, amount, time_us, label, _ = record.split(b"\0", 5)
    payment = Payment(
        orjson.loads(transaction_id),
        orjson.loads(customer),
        orjson.loads(terminal),
        float(amount),
        int(time_us),
    )
    return payment, label


def _conflict(transaction_id: TransactionId) -> PaymentConflict:
    return PaymentConflict(
        f"transaction {transaction_id!r} was recorded before with other content; send a new "
        "transaction_id for a new payment"
    )
