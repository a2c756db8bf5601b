"""What an alert store does, whichever keeps it: the embedded history's SQLite file or
Redis. Each keeps its alerts beside the history, so that a resolution's labels, the
alert's state and the card's freeze are one transaction of one store. One test suite runs
against both."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.fraud.alerts.records import (
    Alert,
    AlertCounts,
    AlertStatus,
    AlertSummary,
    FlaggedPayment,
    Freeze,
    Outcome,
    QueuePosition,
)
from app.fraud.history.records import TransactionId


class AlertStore(Protocol):
    async def flag(self, flagged: Sequence[FlaggedPayment]) -> int:
        """Add each payment to its card's open alert, opening one where the card has none;
        how many alerts were opened. A payment flagged before (a client's retry) is not
        added again."""
        ...

    async def page(
        self, status: AlertStatus, limit: int, after: QueuePosition | None
    ) -> list[AlertSummary]:
        """Alerts of a status by score, highest first (ties: newest first), from `after`."""
        ...

    async def get(self, alert_id: int) -> Alert | None: ...

    async def resolve(self, alert_id: int, outcome: Outcome, note: str, by: str | None) -> Alert:
        """Label the alert's payments with the outcome, close it and, for fraud, freeze
        its card: all of it or none. `AlertNotFound`, or `AlertResolved` when it was
        resolved before (by another analyst a moment ago, perhaps)."""
        ...

    async def freeze(
        self, customer_id: TransactionId, note: str, by: str | None, alert_id: int | None = None
    ) -> Freeze:
        """Freeze a card; `CardFrozen` when it is frozen already."""
        ...

    async def unfreeze(self, raw_id: str, by: str | None) -> Freeze | None:
        """Lift the freeze of the card a path segment names; the freeze lifted, or None
        when the card is not frozen."""
        ...

    async def freeze_of(self, customer_id: TransactionId) -> Freeze | None:
        """The card's freeze; None when it is not frozen."""
        ...

    async def frozen(self, limit: int) -> list[Freeze]:
        """Frozen cards, the latest frozen first."""
        ...

    def counts(self) -> AlertCounts:
        """As last known (read at scrape time, so never a round trip)."""
        ...
