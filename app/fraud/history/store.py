"""What a fraud history store does, whichever keeps it: the embedded one (SQLite on local
disk, one process) or Redis (shared by replicas). Both compute the same windows from the
same payments; one test suite runs against both."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from app.fraud.alerts.store import AlertStore
from app.fraud.history.records import Payment, TransactionId, Windows

LabelOutcome = Literal["applied", "unchanged", "unknown"]
EntityKind = Literal["customer", "terminal"]

# A payment as loaded in bulk: ids in their stored (JSON) text, amount, event time in
# microseconds, and its label (None: none known).
LoadRow = tuple[str, str, str, float, int, int | None]


@dataclass(slots=True)
class Recorded:
    """A payment after `record`, with its windows. `new` is False for a payment recorded
    before (a client's retry): then `earlier_answer` is the answer it got, where kept."""

    payment: Payment
    windows: Windows
    new: bool = True
    earlier_answer: bytes | None = None
    # The store's handle on the write that will hold this payment, while it is recorded
    # only in memory (see `HistoryStore.persist`); None once durable.
    unwritten: object | None = None
    frozen: bool = False  # its card was frozen when it was recorded


@dataclass(frozen=True, slots=True)
class KnownPayment:
    payment: Payment
    fraud: bool | None


@dataclass(frozen=True, slots=True)
class EntityView:
    """What the history knows of a card or a terminal: the windows as of its newest
    payment, and its newest payments, newest first."""

    entity: TransactionId
    windows: Windows
    newest: list[KnownPayment]


class HistorySize(NamedTuple):
    payments: int
    bytes: int  # on disk (embedded) or in memory (Redis)
    newest_us: int | None


class HistoryStore(Protocol):
    retention_us: int
    # True where `record_now` works (in memory, without waiting): the data plane then
    # records a request's payments as its model batch forms.
    records_at_once: bool
    # Why the store is not available now, if it is not (for /readyz); None when it is.
    problem: str | None

    @property
    def alerts(self) -> AlertStore:
        """The analyst's queue and the frozen cards, in the same store."""
        ...

    @property
    def where(self) -> str:
        """Where the history lives, for logs (a path, or a URL without its password)."""
        ...

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Find out whether the store answers, and reconnect if it can; sets `problem`."""
        ...

    async def record(self, payments: Sequence[Payment]) -> list[Recorded]:
        """Record a batch in time order (ties by id), each payment seeing the earlier ones,
        and return each one's windows in request order. All or nothing: a batch that cannot
        be recorded leaves no trace. A payment recorded before is not recorded again.
        Recorded payments count in the windows of later ones at once, but may be durable
        only after `persist`."""
        ...

    async def preview(self, payments: Sequence[Payment]) -> list[Recorded]:
        """Each payment's windows as `record` would give them (its card's freeze too), and
        nothing recorded: "what if". A payment recorded before keeps its recorded windows."""
        ...

    def record_now(self, payments: Sequence[Payment]) -> list[Recorded]:
        """`record` without waiting, where `records_at_once`."""
        ...

    async def persist(self, recorded: Sequence[Recorded]) -> None:
        """Return once these payments are durable: call it before answering for them.
        Raises `StoreUnavailable` when they could not be written; they are forgotten then."""
        ...

    async def forget(self, transaction_ids: Sequence[TransactionId]) -> None:
        """Undo `record` for payments whose scoring failed: recorded and scored, or
        neither."""
        ...

    def keep_answers(self, answers: dict[TransactionId, bytes]) -> None:
        """Keep the answer each payment got, for retries of the same payment: in memory at
        once, written with the next payments (so it never fails a request; an answer lost
        with the process costs a retry only a new scoring from the history)."""
        ...

    async def label(self, labels: Sequence[tuple[TransactionId, bool]]) -> list[LabelOutcome]:
        """Apply fraud labels; a later one corrects an earlier one. Per label: applied,
        unchanged, or unknown (no such payment)."""
        ...

    async def view(self, kind: EntityKind, raw_id: str, limit: int) -> EntityView | None:
        """A card or terminal named as in a URL (digits name an integer id where the
        history has one); None when the history holds none of its payments."""
        ...

    async def prune(self) -> int:
        """Forget payments older than the retention before the newest event time; how
        many."""
        ...

    async def load(self, rows: Sequence[LoadRow]) -> int:
        """Insert payments in bulk, leaving ids already there as they are; how many were
        new. No windows are computed."""
        ...

    def size(self) -> HistorySize:
        """As last known (read at scrape time, so never a round trip)."""
        ...
