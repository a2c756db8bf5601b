"""The embedded history store: SQLite on local disk for durability, the history in memory
for reads.

Recording works in memory and does not wait (`record_now`: the data plane records a
request's payments as its model batch forms): the payments count in the windows of later
ones at once. `persist`, called before a request is answered, writes every payment recorded
since the last write, with the answers given, in one SQLite transaction (WAL journal): the
first request of a model batch to be answered writes for all of them, and a payment that
was answered survives a killed process. On opening, the payments within the retention are
read back into memory, where windows are computed without a query. One process owns the
file: replicas that share a history use the Redis store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson

from app.errors import PaymentConflict, StoreUnavailable, ValidationFailed
from app.fraud.alerts.embedded import EmbeddedAlerts
from app.fraud.history.coalescing import ANSWERS_WITHIN_S
from app.fraud.history.records import DAY_US, Payment, TransactionId, id_candidates, id_text
from app.fraud.history.store import (
    EntityKind,
    EntityView,
    HistorySize,
    KnownPayment,
    LabelOutcome,
    LoadRow,
    Recorded,
)
from app.fraud.history.windows import HistoryIndex, Known, Timeline

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payments (
    transaction_id TEXT PRIMARY KEY,  -- JSON: 123 or "abc", so ids keep their type
    customer_id TEXT NOT NULL,
    terminal_id TEXT NOT NULL,
    amount REAL NOT NULL,
    time_us INTEGER NOT NULL,
    fraud INTEGER,                    -- NULL until a label arrives
    answer BLOB                       -- the answer given, for a retry of the same payment
) WITHOUT ROWID;
-- No index on time: payments come in any order of time, and keeping one up to date cost
-- two thirds of every write. Pruning deletes by id what the memory forgot; opening scans.
DROP INDEX IF EXISTS payments_by_time;
"""


class _Unwritten:
    """Payments recorded in memory since the last write, and how their write ended."""

    __slots__ = ("error", "payments")

    def __init__(self) -> None:
        self.payments: dict[TransactionId, Payment] = {}
        self.error: StoreUnavailable | None = None


class EmbeddedHistory:
    records_at_once = True

    def __init__(self, path: Path, retention_days: int = 37) -> None:
        self.path = path
        self.retention_us = retention_days * DAY_US
        self.index = HistoryIndex()
        self.newest_us: int | None = None  # the latest event time recorded
        self.problem: str | None = None  # why the history is not available, if it is not
        self._db: sqlite3.Connection | None = None
        self._unwritten = _Unwritten()
        self._answers: dict[TransactionId, bytes] = {}  # given, not written yet
        self._answers_timer: asyncio.TimerHandle | None = None
        self.alerts = EmbeddedAlerts(self)

    @property
    def where(self) -> str:
        return str(self.path)

    async def open(self) -> None:
        """Open (or create) the file and read the retained history into memory (seconds
        for weeks of payments: in a thread)."""
        await asyncio.to_thread(self.open_now)

    def open_now(self) -> None:
        self.index = HistoryIndex()  # a failed attempt may have left half of it
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a commit is in the WAL when it returns, which a killed process keeps.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self.alerts.open_now(db)
            newest = db.execute("SELECT max(time_us) FROM payments").fetchone()[0]
            if newest is not None:  # what was loaded, or kept past a prune, too old now
                db.execute("DELETE FROM payments WHERE time_us < ?", (newest - self.retention_us,))
            rows = db.execute(
                "SELECT transaction_id, customer_id, terminal_id, amount, time_us, fraud "
                "FROM payments ORDER BY time_us"
            )
            for row in rows:
                fraud = None if row[5] is None else bool(row[5])
                self.index.add(_payment(row), fraud)
        except (sqlite3.Error, OSError) as exc:
            self.problem = f"the history at {self.path} cannot be opened: {exc}"
            raise StoreUnavailable(self.problem) from exc
        self.newest_us = newest
        self.problem = None
        self._db = db
        # Weeks of payments are hundreds of thousands of objects that stay: out of the
        # collector's full passes (250 ms each at 800,000 payments), which scan everything.
        gc.freeze()

    def size(self) -> HistorySize:
        """Payments kept, bytes on disk (the file and its journal), newest event time."""
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        size = sum(f.stat().st_size for f in files if f.exists())
        return HistorySize(len(self.index.payments), size, self.newest_us)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def close(self) -> None:
        if self._db is not None:
            self._write_unwritten()
        self.close_now()

    def close_now(self) -> None:
        if self._answers_timer is not None:
            self._answers_timer.cancel()
            self._answers_timer = None
        if self._db is not None:
            self._db.close()
            self._db = None

    async def check(self) -> None:
        """A file that could not be opened at start is tried again."""
        if self._db is None:
            with contextlib.suppress(StoreUnavailable):
                await self.open()

    async def record(self, payments: Sequence[Payment]) -> list[Recorded]:
        return self.record_now(payments)

    def record_now(self, payments: Sequence[Payment]) -> list[Recorded]:
        self.connection()  # open, or nothing happens
        self._check_retention(payments)
        new = self._new_ones(payments)
        unwritten = self._unwritten
        for payment in new.values():
            self.index.add(payment)
            unwritten.payments[payment.transaction_id] = payment
        if new:
            newest = max(p.time_us for p in new.values())
            self.newest_us = newest if self.newest_us is None else max(self.newest_us, newest)
        return self._recorded(payments, new)

    async def preview(self, payments: Sequence[Payment]) -> list[Recorded]:
        self.connection()
        self._check_retention(payments)
        new = self._new_ones(payments)
        newest = self.newest_us
        for payment in new.values():
            self.index.add(payment)
        try:
            return [
                Recorded(
                    p,
                    self.index.windows(p),
                    p.transaction_id in new,
                    frozen=self.alerts.is_frozen(p.customer_id),
                )
                for p in payments
            ]
        finally:  # nothing awaited in between: no other request saw them
            for transaction_id in new:
                self.index.remove(transaction_id)
            self.newest_us = newest

    async def persist(self, recorded: Sequence[Recorded]) -> None:
        for unwritten in {r.unwritten for r in recorded}:
            if not isinstance(unwritten, _Unwritten):
                continue  # written already
            if unwritten is self._unwritten:
                self._write_unwritten()
            if unwritten.error is not None:
                raise unwritten.error

    def _write_unwritten(self) -> None:
        """Write the payments recorded since the last write, and the answers given since,
        in one transaction. If that fails, those payments are forgotten (each request that
        recorded one is told by `persist`) and the answers wait for the next write."""
        unwritten, self._unwritten = self._unwritten, _Unwritten()
        answers, self._answers = self._answers, {}
        if self._answers_timer is not None:
            self._answers_timer.cancel()
            self._answers_timer = None
        known = self.index.payments
        # Forgotten or pruned since it was recorded: not in memory, not written.
        payments = [known[i] for i in unwritten.payments if i in known]
        try:
            self._write(payments, answers)
        except (sqlite3.Error, StoreUnavailable) as exc:
            unwritten.error = StoreUnavailable(f"the history could not be written: {exc}")
            for payment in payments:
                self.index.remove(payment.transaction_id)
            self._answers = answers | self._answers
            self.newest_us = max(
                (t.times[-1] for t in self.index.customers.values() if t.times), default=None
            )

    def _new_ones(self, payments: Sequence[Payment]) -> dict[TransactionId, Payment]:
        """The payments not recorded before; PaymentConflict for an id recorded (or sent in
        the same request) with other content."""
        new: dict[TransactionId, Payment] = {}
        for payment in payments:
            earlier = self.index.payments.get(payment.transaction_id)
            same_id = new.get(payment.transaction_id) or (earlier and earlier.payment)
            if same_id is None:
                new[payment.transaction_id] = payment
            elif same_id != payment:
                raise PaymentConflict(
                    f"transaction {payment.transaction_id!r} was recorded before with other "
                    "content; send a new transaction_id for a new payment"
                )
        return new

    def _recorded(
        self, payments: Sequence[Payment], new: dict[TransactionId, Payment]
    ) -> list[Recorded]:
        known = [p.transaction_id for p in payments if p.transaction_id not in new]
        earlier = self._written_answers(known) if known else {}
        for transaction_id in known:
            if transaction_id in self._answers:  # given, not written yet
                earlier[transaction_id] = self._answers[transaction_id]
        unwritten = self._unwritten
        return [
            Recorded(
                p,
                self.index.windows(p),
                p.transaction_id in new,
                earlier.get(p.transaction_id) or None,
                unwritten if p.transaction_id in unwritten.payments else None,
                self.alerts.is_frozen(p.customer_id),
            )
            for p in payments
        ]

    async def forget(self, transaction_ids: Sequence[TransactionId]) -> None:
        ids = [i for i in transaction_ids if i in self.index.payments]
        for transaction_id in ids:
            self.index.remove(transaction_id)
        unwritten = self._unwritten.payments
        ids = [i for i in ids if unwritten.pop(i, None) is None]  # the rest is on disk
        if not ids:
            return
        try:
            with self.transaction() as db:
                db.executemany(
                    "DELETE FROM payments WHERE transaction_id = ?", [(id_text(i),) for i in ids]
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the history could not be written: {exc}") from exc

    def keep_answers(self, answers: dict[TransactionId, bytes]) -> None:
        """Written with the next payments, or within `ANSWERS_WITHIN_S` when none come."""
        self._answers.update(answers)
        if answers and self._answers_timer is None:
            loop = asyncio.get_running_loop()
            self._answers_timer = loop.call_later(ANSWERS_WITHIN_S, self._write_late_answers)

    def _write_late_answers(self) -> None:
        self._answers_timer = None
        if self._db is None:
            return
        self._write_unwritten()
        if self._answers:  # not written: try again later, not at once
            loop = asyncio.get_running_loop()
            self._answers_timer = loop.call_later(ANSWERS_WITHIN_S, self._write_late_answers)

    async def label(self, labels: Sequence[tuple[TransactionId, bool]]) -> list[LabelOutcome]:
        outcomes: list[LabelOutcome] = []
        try:
            with self.labelling(labels, outcomes):
                pass
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the labels could not be written: {exc}") from exc
        return outcomes

    @contextlib.contextmanager
    def labelling(
        self, labels: Sequence[tuple[TransactionId, bool]], outcomes: list[LabelOutcome]
    ) -> Iterator[sqlite3.Connection]:
        """Apply labels in memory and in a transaction that the caller may add to (an
        alert's resolution); if it fails, memory is as it was. Per label, its outcome is
        appended to `outcomes`: applied, unchanged, or unknown (no such payment)."""
        self.connection()  # open, or nothing happens
        changed: list[tuple[int, str]] = []
        undo: list[tuple[TransactionId, bool | None]] = []  # to restore if the write fails
        for transaction_id, fraud in labels:
            try:
                previous = self.index.set_label(transaction_id, fraud)
            except KeyError:
                outcomes.append("unknown")
                continue
            if previous == fraud:
                outcomes.append("unchanged")
                continue
            outcomes.append("applied")
            undo.append((transaction_id, previous))
            changed.append((int(fraud), id_text(transaction_id)))
        try:
            with self.transaction() as db:
                db.executemany("UPDATE payments SET fraud = ? WHERE transaction_id = ?", changed)
                yield db
        except BaseException:
            for transaction_id, previous in reversed(undo):
                self.index.set_label(transaction_id, bool(previous))
                self.index.payments[transaction_id].fraud = previous  # None stays None
            raise

    async def view(self, kind: EntityKind, raw_id: str, limit: int) -> EntityView | None:
        self.connection()
        timelines = self.index.customers if kind == "customer" else self.index.terminals
        timeline = timelines.get(_identifier(raw_id, timelines))
        if timeline is None or not timeline.ids:
            return None
        newest = self.index.payments[timeline.ids[-1]].payment
        payments = self.index.payments
        return EntityView(
            timeline.entity,
            self.index.windows(newest),
            [
                KnownPayment(payments[i].payment, payments[i].fraud)
                for i in reversed(timeline.ids[-limit:])
            ],
        )

    async def prune(self) -> int:
        if self.newest_us is None:
            return 0
        forgotten = self.index.drop_before(self.newest_us - self.retention_us)
        try:
            with self.transaction() as db:
                db.executemany(
                    "DELETE FROM payments WHERE transaction_id = ?",
                    [(id_text(i),) for i in forgotten],
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the history could not be pruned: {exc}") from exc
        return len(forgotten)

    async def load(self, rows: Sequence[LoadRow]) -> int:
        """Straight into the file (fast enough for 100,000 rows a second): the payments in
        memory are not updated, so load before the server starts."""
        self._write_unwritten()  # so that their ids are known to the file
        before = self.connection().total_changes
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO payments "
                "(transaction_id, customer_id, terminal_id, amount, time_us, fraud) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
        return db.total_changes - before

    def _check_retention(self, payments: Sequence[Payment]) -> None:
        if self.newest_us is None:
            return
        horizon = self.newest_us - self.retention_us
        for payment in payments:
            if payment.time_us < horizon:
                raise ValidationFailed(
                    f"transaction {payment.transaction_id!r}: its timestamp is older than the "
                    f"history keeps ({self.retention_us // DAY_US} days before the newest)",
                    [{"field": "timestamp", "message": "older than the retention"}],
                )

    def _write(self, payments: list[Known], answers: dict[TransactionId, bytes]) -> None:
        """The payments with their answers where given already (an answer written apart
        costs as much again as its payment), then the other answers."""
        if not payments and not answers:
            return
        rows = []
        for p in payments:
            transaction_id = p.transaction_id
            rows.append(
                (
                    id_text(transaction_id),
                    id_text(p.customer.entity),
                    id_text(p.terminal.entity),
                    p.amount,
                    p.time_us,
                    None if p.fraud is None else int(p.fraud),  # labelled before its write
                    answers.get(transaction_id),
                )
            )
        written = {p.transaction_id for p in payments}
        later = [(answer, id_text(i)) for i, answer in answers.items() if i not in written]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO payments (transaction_id, customer_id, terminal_id, amount, "
                "time_us, fraud, answer) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            db.executemany("UPDATE payments SET answer = ? WHERE transaction_id = ?", later)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One commit for many statements (executemany alone commits each one)."""
        db = self.connection()
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a failed COMMIT may have rolled back already
                db.execute("ROLLBACK")
            raise

    def _written_answers(self, transaction_ids: list[TransactionId]) -> dict[TransactionId, bytes]:
        marks = ",".join("?" * len(transaction_ids))
        rows = self.connection().execute(
            f"SELECT transaction_id, answer FROM payments WHERE transaction_id IN ({marks})",
            [id_text(i) for i in transaction_ids],
        )
        return {orjson.loads(text): answer or b"" for text, answer in rows}

    def connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("the history is not open")
        return self._db


def _identifier(raw: str, timelines: dict[TransactionId, Timeline]) -> TransactionId:
    """A path segment as the id it names: an integer where the history has one so written,
    else the string."""
    return next((c for c in id_candidates(raw) if c in timelines), raw)


def _payment(row: tuple[str, str, str, float, int, int | None]) -> Payment:
    return Payment(orjson.loads(row[0]), orjson.loads(row[1]), orjson.loads(row[2]), row[3], row[4])
