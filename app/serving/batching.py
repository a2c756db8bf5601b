"""Server-side dynamic batching: many requests' rows, one model call.

One `DynamicBatcher` per model version. Requests join a FIFO queue of rows; one worker
takes rows from the head, in arrival order, until the batch holds `max_batch_size` rows or
the oldest row has waited `max_queue_delay_ms`, then runs the batch in its own thread (or,
for batches quicker than the hop to that thread, on the event loop) and hands each request
its slice of the output. With a zero delay a batch goes as soon as the
worker is free, so rows gather only while the previous batch runs: no wait at low load,
full batches under load. A request with more rows than a batch is split across batches,
and since the queue is FIFO, it delays only requests that arrived after it.

Admission: a request is refused at once (503) when the queue is full, or when the rows
ahead of it, at the rate the model has been running full batches, would take more than
half of the time left before its deadline: better an immediate "retry later" than a 504
after the wait. Rows ahead are those queued and those of requests admitted but still on
their way (reading, parsing, decoding): otherwise a burst of requests would all see the
same short queue, all be admitted, and overshoot it together.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NoReturn, Protocol

import numpy as np

from app.errors import DeadlineExceeded, InferenceFailed, Overloaded, ShuttingDown

logger = logging.getLogger(__name__)

RunBatch = Callable[[np.ndarray], np.ndarray]
# Runs on a request's outputs before any request of its batch is answered; raising fails
# that request alone.
OnOutputs = Callable[[np.ndarray], None]
_RATE_SMOOTHING = 0.1  # weight of the newest full batch in the per-row time
_SIZE_SMOOTHING = 0.05  # weight of the newest request in the rows-per-request average
ADMISSION_SHARE = 0.5  # of a request's time left, the most it may expect to wait queued


class BatchObserver(Protocol):
    """Where a batcher reports what it does (metrics); every method must be cheap."""

    def batch_ran(self, rows: int, max_rows: int, seconds: float, waits: list[float]) -> None: ...
    def rejected(self) -> None: ...
    def expired(self) -> None: ...


class _Unobserved:
    def batch_ran(self, rows: int, max_rows: int, seconds: float, waits: list[float]) -> None:
        pass

    def rejected(self) -> None:
        pass

    def expired(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class DeferredRows:
    """Rows made only when their request joins a batch (`make` may raise to fail that
    request alone): for inputs that depend on what happened just before the model runs,
    and that are cheaper made for a whole batch at once."""

    size: int
    make: Callable[[], np.ndarray]


@dataclass(eq=False)
class _Request:
    rows: np.ndarray | DeferredRows
    deadline: float  # time.monotonic()
    enqueued_at: float
    future: asyncio.Future[np.ndarray]
    on_outputs: OnOutputs | None = None
    taken: int = 0  # rows already placed in a batch
    outputs: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (offset, rows)
    done_rows: int = 0

    @property
    def size(self) -> int:
        rows = self.rows
        return rows.size if isinstance(rows, DeferredRows) else len(rows)

    @property
    def made_rows(self) -> np.ndarray:
        """Its rows, once it is in a batch (`_take` makes deferred ones)."""
        assert isinstance(self.rows, np.ndarray)
        return self.rows


class Admission:
    """A request admitted to a batcher and on its way to the queue. Until it is queued (or
    released, when it fails on the way), its rows count in the wait of requests after it.
    A context manager: leaving the block releases it, however the block ends."""

    __slots__ = ("_batcher", "rows")

    def __init__(self, batcher: DynamicBatcher, rows: float) -> None:
        self._batcher: DynamicBatcher | None = batcher
        self.rows = rows

    def count(self, rows: int) -> None:
        """The request's real size, once parsed (admission before the body guesses it)."""
        if self._batcher is not None:
            self._batcher._arriving_rows += rows - self.rows
        self.rows = rows

    def release(self) -> None:
        """Stop counting the request as arriving; safe to call more than once."""
        if self._batcher is not None:
            self._batcher._arriving_rows -= self.rows
            self._batcher = None

    def __enter__(self) -> Admission:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def is_for(self, batcher: DynamicBatcher) -> bool:
        return self._batcher is batcher


@dataclass
class BatchStats:
    """Counters for tests; metrics go through the `BatchObserver`."""

    expired: int = 0
    rejected: int = 0
    sizes: collections.deque[int] = field(default_factory=lambda: collections.deque(maxlen=1024))


class DynamicBatcher:
    def __init__(
        self,
        run: RunBatch,
        *,
        name: str,
        max_batch_size: int,
        max_queue_delay_ms: float,
        max_queue_items: int,
        observer: BatchObserver | None = None,
    ) -> None:
        self.name = name
        self.observer = observer or _Unobserved()
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_items = max_queue_items
        self.stats = BatchStats()
        self._run = run
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued_rows = 0
        self._arriving_rows = 0.0  # of admitted requests not yet queued (`Admission`)
        self._rows_per_request = 1.0  # moving average: the guess for a body not yet read
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        # One thread per batcher: a model runs one batch at a time. Batches of up to
        # `inline_rows` rows are so quick that handing them to the thread costs more than
        # running them; those run on the event loop (set from warm-up timings).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self.inline_rows = 0
        # Seconds per row of a full batch: measured at warm-up, then a moving average.
        self.row_seconds = 0.0
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._work(), name=f"batcher-{self.name}"
            )

    async def infer(
        self,
        rows: np.ndarray | DeferredRows,
        deadline: float,
        admission: Admission | None = None,
        on_outputs: OnOutputs | None = None,
    ) -> np.ndarray:
        """Run `rows` (`[n, ...]`) through the model, batched with others; outputs `[n, ...]`.

        With an `admission` from this batcher the request was admitted already, and only the
        memory bound is checked again; without one it is admitted here. `on_outputs` is
        for work that every request of a batch must have done before the first of them is
        answered (the fraud history writes a batch's answers in one go).
        """
        if self._closing:
            raise ShuttingDown(f"model {self.name} is shutting down")
        size = rows.size if isinstance(rows, DeferredRows) else len(rows)
        if admission is not None and admission.is_for(self):
            self._check_room(size)
        else:
            admission = self.admit(size, deadline)
        admission.release()  # its rows are counted as queued from here
        loop = asyncio.get_running_loop()
        request = _Request(rows, deadline, time.monotonic(), loop.create_future(), on_outputs)
        # A waiter that gave up leaves nobody to read the outcome; mark it read.
        request.future.add_done_callback(_consume_outcome)
        self._queue.append(request)
        self._queued_rows += request.size
        self._rows_per_request += _SIZE_SMOOTHING * (request.size - self._rows_per_request)
        self._idle.clear()
        self._wakeup.set()
        # The event loop's clock is time.monotonic(), so the deadline needs no conversion.
        timer = loop.call_at(deadline, self._on_deadline, request)
        try:
            return await request.future
        except asyncio.CancelledError:
            if request.taken == 0:
                self._withdraw(request)
            raise
        finally:
            timer.cancel()

    def admit(self, rows: int | None, deadline: float) -> Admission:
        """Admit a request of `rows` rows (None: not known yet, its body is unread), or
        raise what `infer` would refuse it with now. Callers with costly preparation
        (reading and decoding images) are admitted first and spare that work on a refusal;
        they pass the `Admission` to `infer`, and release it if they fail on the way."""
        self._check_room(rows or 1)
        now = time.monotonic()
        if deadline <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        # Only the rows ahead count: like the 504 rule, the deadline bounds the wait, not the
        # run. Admitting up to the deadline itself would fill the queue with requests that
        # expire on any misestimate; half of the time left keeps the admitted ones served.
        expected_wait = self.expected_wait()
        allowed = ADMISSION_SHARE * (deadline - now)
        if expected_wait > allowed:
            # By then the queue has drained enough for a request like this one.
            retry_after_s = max(1, math.ceil(expected_wait - allowed))
            self._reject(
                f"model {self.name} has {self._queued_rows + self._arriving_rows:.0f} rows "
                "queued or arriving, about "
                f"{expected_wait:.1f} s of work: more than this request's deadline allows; "
                f"retry in {retry_after_s} s",
                retry_after_s,
            )
        guess = self._rows_per_request if rows is None else rows
        self._arriving_rows += guess
        return Admission(self, guess)

    def _check_room(self, rows: int) -> None:
        if self._queued_rows + rows > self.max_queue_items:
            self._reject(f"model {self.name} has {self._queued_rows} rows queued; retry later")

    def expected_wait(self) -> float:
        """Seconds until the rows queued and arriving would be through the model."""
        return (self._queued_rows + self._arriving_rows) * self.row_seconds

    def _reject(self, message: str, retry_after_s: int = 1) -> NoReturn:
        self.stats.rejected += 1
        self.observer.rejected()
        raise Overloaded(message, retry_after_s)

    def _on_deadline(self, request: _Request) -> None:
        # Rows already in a batch are moments from their answer: only queued ones expire.
        if request.taken == 0 and not request.future.done():
            self._expire(request)

    async def close(self, timeout_s: float | None = None) -> None:
        """Refuse new requests, answer the queued ones, then stop the worker."""
        self._closing = True
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            logger.warning(
                "model %s: %d rows still queued at shutdown", self.name, self._queued_rows
            )
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for request in list(self._queue):
            self._withdraw(request)
            if not request.future.done():
                request.future.set_exception(ShuttingDown(f"model {self.name} shut down"))
        self._executor.shutdown(wait=False)  # a batch still running finishes on its own

    def _withdraw(self, request: _Request) -> None:
        try:
            self._queue.remove(request)
        except ValueError:
            return
        self._queued_rows -= request.size - request.taken

    def _expire(self, request: _Request) -> None:
        self._withdraw(request)
        self.stats.expired += 1
        self.observer.expired()
        if not request.future.done():
            request.future.set_exception(
                DeadlineExceeded(f"the request waited past its deadline in {self.name}'s queue")
            )

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
            parts = await self._gather()
            if parts:
                await self._run_batch(parts)

    async def _gather(self) -> list[tuple[_Request, int, int]]:
        """Wait until a batch is due (full, or the oldest row has waited the delay), then
        take it. Rows stay in the queue while we wait, so a request may still expire."""
        yielded = False
        while self._queue:
            wait = self._queue[0].enqueued_at + self.max_queue_delay_s - time.monotonic()
            full = self._queued_rows >= self.max_batch_size
            if not (full or yielded or self._closing) and self._queued_rows <= self.inline_rows:
                # An inline batch holds the event loop while it runs: first let the requests
                # already read off the sockets join it (one loop turn, microseconds).
                yielded = True
                await asyncio.sleep(0)
                continue
            if full or wait <= 0 or self._closing:
                return self._take()
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)
        return []

    def _take(self) -> list[tuple[_Request, int, int]]:
        """Up to `max_batch_size` rows from the head of the queue, in arrival order."""
        parts: list[tuple[_Request, int, int]] = []
        size = 0
        now = time.monotonic()
        while self._queue and size < self.max_batch_size:
            request = self._queue[0]
            if request.taken == 0 and request.deadline <= now:
                self._expire(request)
                continue
            if isinstance(request.rows, DeferredRows):
                try:
                    request.rows = request.rows.make()
                except Exception as exc:
                    self._withdraw(request)
                    request.future.set_exception(exc)
                    continue
            take = min(request.size - request.taken, self.max_batch_size - size)
            parts.append((request, request.taken, request.taken + take))
            request.taken += take
            size += take
            self._queued_rows -= take
            if request.taken == request.size:
                self._queue.popleft()
        return parts

    def _timed_run(self, inputs: np.ndarray) -> tuple[np.ndarray, float]:
        started = time.perf_counter()
        outputs = self._run(inputs)
        return outputs, time.perf_counter() - started

    async def _run_batch(self, parts: list[tuple[_Request, int, int]]) -> None:
        if len(parts) == 1 and parts[0][1] == 0 and parts[0][2] == parts[0][0].size:
            inputs = parts[0][0].made_rows  # the common case at low load: no copy
        else:
            inputs = np.concatenate(
                [request.made_rows[start:stop] for request, start, stop in parts]
            )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        waits = [started - request.enqueued_at for request, start, _ in parts if start == 0]
        try:
            if len(inputs) <= self.inline_rows:
                outputs, seconds = self._timed_run(inputs)
            else:
                outputs, seconds = await loop.run_in_executor(
                    self._executor, self._timed_run, inputs
                )
            if len(outputs) != len(inputs):
                raise RuntimeError(f"model returned {len(outputs)} rows for {len(inputs)}")
        except Exception as exc:
            logger.exception("model %s: a batch of %d rows failed", self.name, len(inputs))
            for request, _, _ in parts:
                if not request.future.done():
                    request.future.set_exception(InferenceFailed(f"inference failed: {exc}"))
                    self._withdraw(request)
            return
        self.observer.batch_ran(len(inputs), self.max_batch_size, seconds, waits)
        if len(inputs) == self.max_batch_size:
            per_row = seconds / len(inputs)
            self.row_seconds += _RATE_SMOOTHING * (per_row - self.row_seconds)
        self.stats.sizes.append(len(inputs))
        offset = 0
        for request, start, stop in parts:
            request.outputs.append((start, outputs[offset : offset + stop - start]))
            offset += stop - start
            request.done_rows += stop - start
            if request.done_rows == request.size and not request.future.done():
                _answer(request, _assemble(request.outputs))


def _answer(request: _Request, outputs: np.ndarray) -> None:
    # Its waiter runs only after the worker's turn: every request of the batch has had its
    # `on_outputs` by then.
    if request.on_outputs is not None:
        try:
            request.on_outputs(outputs)
        except Exception as exc:
            request.future.set_exception(exc)
            return
    request.future.set_result(outputs)


def _consume_outcome(future: asyncio.Future[np.ndarray]) -> None:
    if not future.cancelled():
        future.exception()


def _assemble(outputs: list[tuple[int, np.ndarray]]) -> np.ndarray:
    if len(outputs) == 1:
        return outputs[0][1]
    return np.concatenate([rows for _, rows in sorted(outputs, key=lambda part: part[0])])
