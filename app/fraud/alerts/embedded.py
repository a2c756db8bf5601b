"""The embedded history's alert queue: tables in the same SQLite file as the payments, so
that a resolution (labels, the alert closed, the card frozen) is one SQLite transaction.
The frozen cards are also kept in memory: every payment recorded asks whether its card is
one."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from app.errors import AlertNotFound, AlertResolved, FreezeConflict, StoreUnavailable
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
from app.fraud.history.store import LabelOutcome

if TYPE_CHECKING:
    from app.fraud.history.embedded import EmbeddedHistory

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL,      -- JSON, as in payments
    status TEXT NOT NULL,           -- open or resolved
    score REAL NOT NULL,            -- the highest probability of its payments
    opened_us INTEGER NOT NULL,
    payments INTEGER NOT NULL,
    resolution TEXT                 -- JSON: outcome, note, by, at_us
);
CREATE UNIQUE INDEX IF NOT EXISTS one_open_alert_per_card ON alerts (customer_id)
    WHERE status = 'open';
CREATE INDEX IF NOT EXISTS alert_queue ON alerts (status, score DESC, id DESC);
CREATE TABLE IF NOT EXISTS alert_payments (
    transaction_id TEXT PRIMARY KEY,  -- a payment is flagged into one alert, once
    alert_id INTEGER NOT NULL,
    flagged TEXT NOT NULL             -- JSON: FlaggedPayment.as_stored
);
CREATE INDEX IF NOT EXISTS alert_payments_by_alert ON alert_payments (alert_id);
CREATE TABLE IF NOT EXISTS alert_trail (
    alert_id INTEGER NOT NULL,
    event TEXT NOT NULL               -- JSON, with its at_us
);
CREATE INDEX IF NOT EXISTS alert_trail_by_alert ON alert_trail (alert_id);
CREATE TABLE IF NOT EXISTS frozen_cards (
    customer_id TEXT PRIMARY KEY,
    freeze TEXT NOT NULL              -- JSON: at_us, by, alert_id, note
) WITHOUT ROWID;
"""

_SUMMARY = "SELECT id, customer_id, status, score, opened_us, payments, resolution FROM alerts"


class EmbeddedAlerts:
    def __init__(self, history: EmbeddedHistory) -> None:
        self.history = history
        self._frozen: dict[TransactionId, Freeze] = {}
        self._counts = AlertCounts(0, 0, 0, 0, 0)

    def open_now(self, db: sqlite3.Connection) -> None:
        """Create the tables where missing; read the frozen cards and the counts."""
        db.executescript(SCHEMA)
        self._frozen = {
            orjson.loads(card): _freeze(orjson.loads(card), orjson.loads(text))
            for card, text in db.execute("SELECT customer_id, freeze FROM frozen_cards")
        }
        self._count(db)

    def is_frozen(self, customer_id: TransactionId) -> bool:
        return customer_id in self._frozen

    def counts(self) -> AlertCounts:
        return self._counts

    async def flag(self, flagged: Sequence[FlaggedPayment]) -> int:
        opened = 0
        at_us = now_us()
        try:
            with self.history.transaction() as db:
                for item in flagged:
                    # Frozen since the payment was recorded (by another analyst): no alert.
                    if not self.is_frozen(item.payment.customer_id):
                        opened += _flag_one(db, item, at_us)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the alerts could not be written: {exc}") from exc
        counts = self._counts
        self._counts = counts._replace(opened=counts.opened + opened, open=counts.open + opened)
        return opened

    async def page(
        self, status: AlertStatus, limit: int, after: QueuePosition | None
    ) -> list[AlertSummary]:
        db = self.history.connection()
        if after is None:
            rows = db.execute(
                f"{_SUMMARY} WHERE status = ? ORDER BY score DESC, id DESC LIMIT ?",
                (status, limit),
            )
        else:
            rows = db.execute(
                f"{_SUMMARY} WHERE status = ? AND (score < ? OR (score = ? AND id < ?)) "
                "ORDER BY score DESC, id DESC LIMIT ?",
                (status, after.score, after.score, after.alert_id, limit),
            )
        return [_summary(row) for row in rows]

    async def get(self, alert_id: int) -> Alert | None:
        db = self.history.connection()
        row = db.execute(f"{_SUMMARY} WHERE id = ?", (alert_id,)).fetchone()
        if row is None:
            return None
        flagged = db.execute(
            "SELECT flagged FROM alert_payments WHERE alert_id = ? ORDER BY rowid", (alert_id,)
        )
        trail = db.execute(
            "SELECT event FROM alert_trail WHERE alert_id = ? ORDER BY rowid", (alert_id,)
        )
        return Alert(
            _summary(row),
            [orjson.loads(text) for (text,) in flagged],
            [orjson.loads(text) for (text,) in trail],
        )

    async def resolve(self, alert_id: int, outcome: Outcome, note: str, by: str | None) -> Alert:
        db = self.history.connection()
        row = db.execute(
            "SELECT status, customer_id FROM alerts WHERE id = ?", (alert_id,)
        ).fetchone()
        if row is None:
            raise AlertNotFound(f"no alert {alert_id}")
        if row[0] != "open":
            raise AlertResolved(f"alert {alert_id} was resolved before")
        customer_id = orjson.loads(row[1])
        at_us = now_us()
        resolution = {"outcome": outcome, "note": note, "by": by, "at_us": at_us}
        ids = [
            orjson.loads(text)
            for (text,) in db.execute(
                "SELECT transaction_id FROM alert_payments WHERE alert_id = ?", (alert_id,)
            )
        ]
        fraud = outcome == "fraud"
        freeze = None
        if fraud and customer_id not in self._frozen:
            freeze = Freeze(customer_id, at_us, by, alert_id, note)
        outcomes: list[LabelOutcome] = []
        try:
            # One transaction: the labels, the alert closed, its trail, the card frozen.
            with self.history.labelling([(i, fraud) for i in ids], outcomes) as db:
                db.execute(
                    "UPDATE alerts SET status = 'resolved', resolution = ? WHERE id = ?",
                    (orjson.dumps(resolution), alert_id),
                )
                _trail(db, alert_id, {"event": "resolved", **resolution})
                if freeze is not None:
                    _trail(db, alert_id, {"event": "card_frozen", "by": by, "at_us": at_us})
                    db.execute(
                        "INSERT INTO frozen_cards (customer_id, freeze) VALUES (?, ?)",
                        (id_text(customer_id), _freeze_json(freeze)),
                    )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the resolution could not be written: {exc}") from exc
        if freeze is not None:
            self._frozen[customer_id] = freeze
        counts = self._counts
        self._counts = counts._replace(
            open=counts.open - 1,
            resolved_fraud=counts.resolved_fraud + fraud,
            resolved_genuine=counts.resolved_genuine + (not fraud),
            frozen=len(self._frozen),
        )
        alert = await self.get(alert_id)
        assert alert is not None
        return alert

    async def freeze(
        self, customer_id: TransactionId, note: str, by: str | None, alert_id: int | None = None
    ) -> Freeze:
        if customer_id in self._frozen:
            raise FreezeConflict(f"card {customer_id!r} is frozen already")
        freeze = Freeze(customer_id, now_us(), by, alert_id, note)
        try:
            with self.history.transaction() as db:
                db.execute(
                    "INSERT INTO frozen_cards (customer_id, freeze) VALUES (?, ?)",
                    (id_text(customer_id), _freeze_json(freeze)),
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the freeze could not be written: {exc}") from exc
        self._frozen[customer_id] = freeze
        self._counts = self._counts._replace(frozen=len(self._frozen))
        return freeze

    async def unfreeze(self, raw_id: str, by: str | None) -> Freeze | None:
        customer_id = next((c for c in id_candidates(raw_id) if c in self._frozen), None)
        if customer_id is None:
            return None
        freeze = self._frozen[customer_id]
        try:
            with self.history.transaction() as db:
                db.execute(
                    "DELETE FROM frozen_cards WHERE customer_id = ?", (id_text(customer_id),)
                )
                if freeze.alert_id is not None:
                    event = {"event": "card_unfrozen", "by": by, "at_us": now_us()}
                    _trail(db, freeze.alert_id, event)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the unfreeze could not be written: {exc}") from exc
        del self._frozen[customer_id]
        self._counts = self._counts._replace(frozen=len(self._frozen))
        return freeze

    async def freeze_of(self, customer_id: TransactionId) -> Freeze | None:
        return self._frozen.get(customer_id)

    async def frozen(self, limit: int) -> list[Freeze]:
        return sorted(self._frozen.values(), key=lambda f: -f.at_us)[:limit]

    def _count(self, db: sqlite3.Connection) -> None:
        """Counted once, on opening; kept up to date by each change after."""
        opened, open_now = db.execute(
            "SELECT count(*), coalesce(sum(status = 'open'), 0) FROM alerts"
        ).fetchone()
        fraud, genuine = db.execute(
            "SELECT coalesce(sum(json_extract(resolution, '$.outcome') = 'fraud'), 0), "
            "coalesce(sum(json_extract(resolution, '$.outcome') = 'genuine'), 0) "
            "FROM alerts WHERE status = 'resolved'"
        ).fetchone()
        self._counts = AlertCounts(opened, open_now, fraud, genuine, len(self._frozen))


def _flag_one(db: sqlite3.Connection, item: FlaggedPayment, at_us: int) -> int:
    """Add one payment to its card's open alert, or open one; 1 if an alert was opened."""
    transaction_id = id_text(item.payment.transaction_id)
    seen = db.execute(
        "SELECT 1 FROM alert_payments WHERE transaction_id = ?", (transaction_id,)
    ).fetchone()
    if seen is not None:
        return 0
    customer_id = id_text(item.payment.customer_id)
    row = db.execute(
        "SELECT id FROM alerts WHERE customer_id = ? AND status = 'open'", (customer_id,)
    ).fetchone()
    if row is None:
        cursor = db.execute(
            "INSERT INTO alerts (customer_id, status, score, opened_us, payments) "
            "VALUES (?, 'open', ?, ?, 1)",
            (customer_id, item.probability, at_us),
        )
        alert_id, event = cursor.lastrowid, "opened"
    else:
        (alert_id,) = row
        db.execute(
            "UPDATE alerts SET score = max(score, ?), payments = payments + 1 WHERE id = ?",
            (item.probability, alert_id),
        )
        event = "flagged"
    db.execute(
        "INSERT INTO alert_payments (transaction_id, alert_id, flagged) VALUES (?, ?, ?)",
        (transaction_id, alert_id, orjson.dumps(item.as_stored())),
    )
    trail = {"event": event, "transaction_id": item.payment.transaction_id, "at_us": at_us}
    _trail(db, alert_id, trail)
    return 1 if event == "opened" else 0


def _trail(db: sqlite3.Connection, alert_id: int | None, event: dict[str, Any]) -> None:
    db.execute(
        "INSERT INTO alert_trail (alert_id, event) VALUES (?, ?)", (alert_id, orjson.dumps(event))
    )


def _summary(row: tuple[Any, ...]) -> AlertSummary:
    alert_id, customer_id, status, score, opened_us, payments, resolution = row
    return AlertSummary(
        alert_id,
        orjson.loads(customer_id),
        status,
        score,
        opened_us,
        payments,
        None if resolution is None else Resolution(**orjson.loads(resolution)),
    )


def _freeze_json(freeze: Freeze) -> bytes:
    return orjson.dumps(
        {"at_us": freeze.at_us, "by": freeze.by, "alert_id": freeze.alert_id, "note": freeze.note}
    )


def _freeze(customer_id: TransactionId, stored: dict[str, Any]) -> Freeze:
    return Freeze(customer_id, stored["at_us"], stored["by"], stored["alert_id"], stored["note"])
