"""Group commit for a remote history (Redis): the payments of concurrent requests are
recorded in one round trip, and the answers given are kept with the next one. At 64
requests in flight that is one call for many requests, not one or two for each. (The
embedded store needs no waiting: it records in memory, and writes a model batch's payments
together when the first of them is answered.)

Each request's payments stay a group of their own: a conflict or a refused timestamp
fails that request alone. A request is answered only once the operation holding its
payments has returned, so what was answered was written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from app.errors import ServingError
from app.fraud.history.records import Payment, TransactionId
from app.fraud.history.store import Recorded

logger = logging.getLogger(__name__)

GroupOutcome = list[Recorded] | ServingError
# Records the groups (and keeps the answers); one outcome per group. Raising fails them all.
RecordGroups = Callable[
    [list[Sequence[Payment]], dict[TransactionId, bytes]], Awaitable[list[GroupOutcome]]
]
Forget = Callable[[Sequence[TransactionId]], Awaitable[None]]

ANSWERS_WITHIN_S = 0.2  # answers wait at most this long for a write to go with


class RecordCoalescer:
    def __init__(self, record_groups: RecordGroups, forget: Forget) -> None:
        self._record_groups = record_groups
        self._forget = forget
        self._waiting: list[tuple[Sequence[Payment], asyncio.Future[list[Recorded]]]] = []
        self._answers: dict[TransactionId, bytes] = {}  # given, not written yet
        self._writer: asyncio.Task[None] | None = None
        self._answers_timer: asyncio.TimerHandle | None = None

    async def record(self, payments: Sequence[Payment]) -> list[Recorded]:
        future: asyncio.Future[list[Recorded]] = asyncio.get_running_loop().create_future()
        self._waiting.append((payments, future))
        self._start_writer()
        # Cancelled (the client left), its payments are left out of the next round, or
        # forgotten after the round under way, as for any request not answered.
        recorded = await future
        for r in recorded:
            if not r.new and r.earlier_answer is None:
                r.earlier_answer = self._answers.get(r.payment.transaction_id)
        return recorded

    def keep_answers(self, answers: dict[TransactionId, bytes]) -> None:
        """Written with the next payments, or within `ANSWERS_WITHIN_S` when none come."""
        self._answers.update(answers)
        if answers and self._answers_timer is None:
            loop = asyncio.get_running_loop()
            self._answers_timer = loop.call_later(ANSWERS_WITHIN_S, self._start_writer)

    async def close(self) -> None:
        """Write what is pending."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
        if self._answers:
            with contextlib.suppress(ServingError):
                await self._write_round()

    def _start_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="history-writer")

    async def _write_all(self) -> None:
        # Started as a task, it runs after the requests of this turn of the event loop have
        # queued their payments; those that come while it writes go in the next round.
        while self._waiting or self._answers:
            try:
                await self._write_round()
            except ServingError:
                pass  # told to the requests waiting; answers not written stay pending
            except Exception:
                logger.exception("fraud history writer")
            else:
                continue
            if self._answers and not self._waiting:  # try them again later, not at once
                self._answers_timer = asyncio.get_running_loop().call_later(
                    ANSWERS_WITHIN_S, self._start_writer
                )
                return

    async def _write_round(self) -> None:
        waiting = [(payments, f) for payments, f in self._waiting if not f.cancelled()]
        self._waiting = []
        answers, self._answers = self._answers, {}
        if self._answers_timer is not None:
            self._answers_timer.cancel()
            self._answers_timer = None
        try:
            outcomes = await self._record_groups([payments for payments, _ in waiting], answers)
        except BaseException as exc:
            self._answers = answers | self._answers
            for _, future in waiting:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            raise
        for (_, future), outcome in zip(waiting, outcomes, strict=True):
            if isinstance(outcome, ServingError):
                if not future.cancelled():
                    future.set_exception(outcome)
            elif future.cancelled():
                self._forget_new(outcome)
            else:
                future.set_result(outcome)

    def _forget_new(self, recorded: list[Recorded]) -> None:
        new = [r.payment.transaction_id for r in recorded if r.new]
        if new:
            task = asyncio.ensure_future(self._forget(new))
            task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning(
            "fraud history: payments of a request left unforgotten: %s", task.exception()
        )
