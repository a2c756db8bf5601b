"""The data plane: one inference request's life, from model resolution to its answer.

Every protocol hands its requests here (`/v1`, and the Open Inference Protocol over REST and
gRPC), so
each step is written once: resolve the version, admit by deadline, read and decode within
the admission, batch, survive a hot swap, watch for a client that hangs up, release, and
report the version that actually answered. Protocols supply the reading of their bodies as
callables and turn the plain answers into their own wire format.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from app.codecs.images import decode_image, to_input_rows
from app.codecs.open_inference import CheckedRequest
from app.codecs.payments import PaymentBatch
from app.codecs.transactions import TransactionRows, in_card_order, needs_history
from app.errors import (
    ClientGone,
    InferenceFailed,
    NeedsHistory,
    ServingError,
    ShuttingDown,
    ValidationFailed,
    WrongModelKind,
)
from app.fraud.alerts.records import FlaggedPayment
from app.fraud.answers import pack_answer, unpack_answer, was_frozen
from app.fraud.decisions import decide
from app.fraud.features import ALL_FEATURES, FEATURE_NAMES, FEATURES
from app.fraud.history.store import HistoryStore, Recorded
from app.fraud.reasons import ReasonsMode, explains, frozen_reason, top_reasons
from app.model_card import ImagePreprocessing, ModelCard
from app.serving.batching import Admission, DeferredRows, DynamicBatcher, OnOutputs
from app.serving.config import DecodeConfig
from app.serving.registry import Kind, ModelRegistry
from app.serving.runtime import ModelRuntime

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
# Watching for a hang-up costs a task per request (a few percent of the event loop with a
# CNN at c=64): worth it only where the answer is further away than this, which also
# bounds the model time an unwatched hang-up can waste.
WATCH_CLIENT_AFTER_S = 1.0

Payload = TypeVar("Payload", bound=Sized)
Rows = np.ndarray | DeferredRows


@dataclass(slots=True)
class Served(Generic[Payload]):
    """What one request got from a model version."""

    runtime: ModelRuntime  # the version that answered
    payload: Payload  # what was read from the request
    outputs: np.ndarray
    attributions: np.ndarray | None = None  # each row's, where they came with the outputs
    reasons_failed: bool = False  # the reasons graph failed on these rows; the model did not

    def known_attributions(self, rows: Iterable[int]) -> dict[int, np.ndarray | None]:
        """By row, for the rows given, the attributions that came with the outputs, or None
        where the reasons graph failed on them (not to be tried again); none where the
        model ran alone."""
        if self.reasons_failed:
            return dict.fromkeys(rows)
        if self.attributions is None:
            return {}
        return {row: self.attributions[row] for row in rows}


@dataclass(slots=True)
class RequestReport:
    """What the data plane tells about a request, for its log line and metrics: the model
    and version that answered it (after a hot swap, the new one) and how many items."""

    model: str | None = None
    version: int | None = None
    items: int | None = None


@dataclass(slots=True)
class InferenceCall:
    """What every protocol's request comes down to."""

    model: str
    version: int | None  # None: the highest ready version, which may change under it
    deadline: float  # on time.monotonic()
    report: RequestReport = field(default_factory=RequestReport)
    # Resolves when the client hangs up; None where the protocol cannot tell.
    client_gone: Callable[[], Awaitable[object]] | None = None


class DataPlane:
    def __init__(
        self,
        registry: ModelRegistry,
        decode: DecodeConfig,
        history: HistoryStore,
    ) -> None:
        self._registry = registry
        self._decode_config = decode
        self._history = history
        self._decoders: ThreadPoolExecutor | None = None

    def start(self) -> None:
        # Image decoding blocks (and mostly releases the GIL): record it off the event loop.
        self._decoders = ThreadPoolExecutor(self._decode_config.threads, "decode")

    def close(self) -> None:
        if self._decoders is not None:
            self._decoders.shutdown(wait=True)
            self._decoders = None

    async def classify(
        self,
        call: InferenceCall,
        read_images: Callable[[], Awaitable[list[bytes]]],
        top_k: int | None,
    ) -> dict[str, Any]:
        """Top-k labels of each image, best first."""

        def check(model_card: ModelCard) -> None:
            if top_k is not None and top_k > len(model_card.labels):
                limit = len(model_card.labels)
                raise ValidationFailed(
                    f"top_k: at most {limit} for model {model_card.name!r}",
                    [{"field": "query.top_k", "message": f"at most {limit}"}],
                )

        async def to_rows(model_card: ModelCard, images: list[bytes]) -> np.ndarray:
            return await self._image_rows(images, model_card)

        served = await self._serve(
            call, "image_classifier", lambda _: read_images(), to_rows, check
        )
        model_card, probabilities = served.runtime.model_card, served.outputs
        _check_finite(probabilities)
        k = min(DEFAULT_TOP_K, len(model_card.labels)) if top_k is None else top_k
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = model_card.labels
        results = [
            {"predictions": [{"label": labels[j], "score": float(row[j])} for j in order]}
            for row, order in zip(probabilities, best, strict=True)
        ]
        return {"model": model_card.name, "version": model_card.version, "results": results}

    async def score(
        self,
        call: InferenceCall,
        read_transactions: Callable[[], Awaitable[TransactionRows]],
        reasons: ReasonsMode = "flagged",
    ) -> dict[str, Any]:
        """Each transaction's fraud probability and decision, in request order, with the
        reasons of those that need them."""
        served = await self._serve(
            call,
            "tabular_classifier",
            lambda _: read_transactions(),
            _transaction_rows,
            _takes_sent_features,
            explained=reasons == "always",
        )
        runtime, transactions, outputs = served.runtime, served.payload, served.outputs
        model_card = runtime.model_card
        thresholds = model_card.thresholds
        assert thresholds is not None
        fraud = outputs.reshape(len(transactions), -1)[:, -1].tolist()  # the last column: fraud
        _check_finite(fraud)
        results = [
            {"transaction_id": t, "fraud_probability": p, "decision": decide(p, thresholds)}
            for t, p in zip(transactions.ids, fraud, strict=True)
        ]

        def values(index: int) -> list[float]:  # float32 as sent: 77.8, not 77.80000305
            return [float(str(v)) for v in transactions.features[index]]

        known = served.known_attributions(range(len(results)))
        await _explain(call, runtime, results, reasons, values, known)
        return {"model": model_card.name, "version": model_card.version, "results": results}

    async def record_and_score(
        self,
        call: InferenceCall,
        read_payments: Callable[[], Awaitable[PaymentBatch]],
        include_features: bool,
        reasons: ReasonsMode = "flagged",
        record: bool = True,
    ) -> dict[str, Any]:
        """Record raw payments in the history and score each with the features computed
        from it. A payment is recorded and scored, or neither; one sent again gets the
        answer it got the first time. Without `record`, scored as if recorded ("what
        if"): nothing is kept, and no alert raised."""
        history = self._history
        recorded: list[Recorded] = []
        inputs: list[list[float]] = []  # per payment, in ALL_FEATURES order
        answered_inputs: list[list[float]] = []  # those of the answers given (a retry's first)
        answered_by: list[ModelRuntime] = []
        frozen: list[bool] = []  # per payment: declined because its card was frozen
        answer: dict[str, Any] = {}

        def rows_of(model_card: ModelCard, batch: PaymentBatch) -> np.ndarray:
            # A retried payment is scored again only to record the batch whole: its answer
            # is the one it got first, where that was kept.
            inputs.extend(
                r.windows.model_inputs(p.payment.amount, p.weekend, p.night)
                for p, r in zip(batch, recorded, strict=True)
            )
            return in_card_order(np.asarray(inputs, dtype=np.float32), model_card, ALL_FEATURES)

        async def to_rows(model_card: ModelCard, batch: PaymentBatch) -> Rows:
            payments = [p.payment for p in batch]
            if not record:
                recorded.extend(await history.preview(payments))
                return rows_of(model_card, batch)
            if history.records_at_once:
                # Recorded as the batch forms, with the payments of the requests before it.
                def make() -> np.ndarray:
                    recorded.extend(history.record_now(payments))
                    return rows_of(model_card, batch)

                return DeferredRows(len(batch), make)
            recorded.extend(await history.record(payments))
            return rows_of(model_card, batch)

        def answer_from(runtime: ModelRuntime, outputs: np.ndarray) -> None:
            # Run by the batcher before any request of the batch is answered, so that the
            # history can write the batch's answers with its payments.
            answered_by.append(runtime)
            model_card = runtime.model_card
            assert model_card.thresholds is not None
            fraud = outputs.reshape(len(recorded), -1)[:, -1].tolist()
            _check_finite(fraud)
            results, answers = [], {}
            for entry, values, probability in zip(recorded, inputs, fraud, strict=True):
                transaction_id = entry.payment.transaction_id
                if entry.earlier_answer:
                    result = unpack_answer(transaction_id, entry.earlier_answer)
                    if len(result["features"]) == len(values):  # else kept by an older version
                        values = list(result["features"].values())
                    frozen.append(was_frozen(entry.earlier_answer))
                    if not include_features:
                        del result["features"]
                else:
                    frozen.append(entry.frozen)
                    decision = (
                        "decline" if entry.frozen else decide(probability, model_card.thresholds)
                    )
                    result = {
                        "transaction_id": transaction_id,
                        "fraud_probability": probability,
                        "decision": decision,
                    }
                    if include_features:
                        result["features"] = dict(zip(FEATURE_NAMES.values(), values, strict=True))
                    if entry.new and record:
                        answers[transaction_id] = pack_answer(
                            probability, decision, values, entry.frozen
                        )
                results.append(result)
                answered_inputs.append(values)
            if record:
                history.keep_answers(answers)
            answer.update(model=model_card.name, version=model_card.version, results=results)

        try:
            served = await self._serve(
                call,
                "tabular_classifier",
                lambda _: read_payments(),
                to_rows,
                _computed_by_history,
                answer_from,
                computes_history=True,
                explained=reasons == "always",
            )
            if record:
                await history.persist(recorded)
        except BaseException:
            if record:
                await history.forget([r.payment.transaction_id for r in recorded if r.new])
            raise
        # Recorded and answered: reasons are words about that answer, computed after it.
        # Flagged payments get theirs whatever the client asked: their alerts keep them.
        results = answer["results"]
        # A retry's answer is the first one's: its reasons are about the features it had.
        known = served.known_attributions(
            i for i, entry in enumerate(recorded) if not entry.earlier_answer
        )
        await _explain(
            call,
            answered_by[-1],
            results,
            "always" if reasons == "always" else "flagged",
            answered_inputs.__getitem__,
            known,
            [(r.payment.customer_id, r.payment.terminal_id) for r in recorded],
            ALL_FEATURES,
        )
        for entry, result, payment_frozen in zip(recorded, results, frozen, strict=True):
            if payment_frozen:
                card_frozen = frozen_reason(entry.payment.customer_id)
                result["reasons"] = [card_frozen, *(result.get("reasons") or ())]
        # A frozen card was judged already: its declines raise no alert. Written before
        # the answer; a retry after a failure here flags the same payments again, once.
        flagged = [
            FlaggedPayment(r.payment, res["fraud_probability"], res["decision"], res.get("reasons"))
            for r, res, payment_frozen in zip(recorded, results, frozen, strict=True)
            if res["decision"] != "approve" and not payment_frozen
        ]
        if flagged and record:
            await history.alerts.flag(flagged)
        if reasons == "never":  # but a frozen card's decline still says why
            for result, payment_frozen in zip(results, frozen, strict=True):
                if payment_frozen:
                    result["reasons"] = result["reasons"][:1]
                else:
                    result.pop("reasons", None)
        return answer

    async def infer(
        self, call: InferenceCall, read: Callable[[ModelCard], Awaitable[CheckedRequest]]
    ) -> tuple[ModelCard, CheckedRequest, np.ndarray]:
        """The model's probabilities for a tensor request (the Open Inference Protocol's):
        rows of the model's own input, or encoded images for image models. `read` is given
        the card of the version that serves the request, to check the request against."""

        def to_rows(
            model_card: ModelCard, checked: CheckedRequest
        ) -> np.ndarray | Awaitable[np.ndarray]:
            if checked.rows is not None:
                return checked.rows
            return self._image_rows(checked.images, model_card)

        served = await self._serve(call, None, read, to_rows)
        _check_finite(served.outputs)
        return served.runtime.model_card, served.payload, served.outputs

    async def _serve(
        self,
        call: InferenceCall,
        kind: Kind | None,
        read: Callable[[ModelCard], Awaitable[Payload]],
        to_rows: Callable[[ModelCard, Payload], Awaitable[Rows] | Rows],
        check: Callable[[ModelCard], None] | None = None,
        on_outputs: Callable[[ModelRuntime, np.ndarray], None] | None = None,
        computes_history: bool = False,
        explained: bool = False,
    ) -> Served[Payload]:
        """Resolve, admit, read, convert and infer; the runtime that answered, the payload
        read, and the model's outputs for it. `on_outputs` is given them in the batcher
        (see `DynamicBatcher.infer`). `computes_history`: see `ModelRegistry.resolve`.
        `explained`: every row wants reasons, so its attributions come in the same run
        where the version can give them (see `ModelRuntime.run_explained`)."""
        runtime = self._registry.resolve(call.model, call.version, kind, computes_history)
        _report(call, runtime)
        if check is not None:
            check(runtime.model_card)
        batcher = _batcher(runtime, explained)
        # Admitted before the body is read: a refusal then costs little besides the
        # protocol, and this request counts in the wait of later ones while it is read.
        with batcher.admit(None, call.deadline) as admission:
            payload = await read(runtime.model_card)
            call.report.items = len(payload)
            admission.count(len(payload))
            rows = to_rows(runtime.model_card, payload)
            if not isinstance(rows, np.ndarray | DeferredRows):  # images decode in threads
                rows = await rows
            work = self._infer(
                call, runtime, rows, admission, on_outputs, computes_history, explained
            )
            outcome = await _unless_client_leaves(call, batcher, work)
        return Served(
            outcome.runtime, payload, outcome.outputs, outcome.attributions, outcome.reasons_failed
        )

    async def _infer(
        self,
        call: InferenceCall,
        runtime: ModelRuntime,
        rows: Rows,
        admission: Admission,
        on_outputs: Callable[[ModelRuntime, np.ndarray], None] | None,
        computes_history: bool,
        explained: bool,
    ) -> _Outcome:
        """Run rows through the runtime's batcher (or its reasons graph's, for `explained`
        rows): the runtime, its outputs, and the attributions where they came too. If that
        version was unloaded after the request found it (a hot swap), and the request did
        not name a version, the version now served answers instead, provided it takes and
        means the same rows."""

        async def run(runtime: ModelRuntime, admission: Admission | None) -> _Outcome:
            batcher = _batcher(runtime, explained)
            done: OnOutputs | None = None
            if batcher is runtime.batcher:
                if on_outputs is not None:
                    done = functools.partial(on_outputs, runtime)
                outputs = await batcher.infer(rows, call.deadline, admission, done)
                return _Outcome(runtime, outputs)
            graph_ran = False

            def done_explained(explained_rows: np.ndarray) -> None:
                nonlocal graph_ran
                graph_ran = True
                assert on_outputs is not None
                on_outputs(runtime, runtime.split_explained(explained_rows)[0])

            if on_outputs is not None:
                done = done_explained
            try:
                outputs = await batcher.infer(rows, call.deadline, admission, done)
            except InferenceFailed:
                if graph_ran:  # what failed was the answer, not the graph
                    raise
                # The reasons graph failed: the model's scores stand without their reasons.
                if on_outputs is not None:
                    done = functools.partial(on_outputs, runtime)
                outputs = await runtime.batcher.infer(rows, call.deadline, None, done)
                return _Outcome(runtime, outputs, reasons_failed=True)
            scores, attributions = runtime.split_explained(outputs)
            return _Outcome(runtime, scores, attributions)

        rows = _made_once(rows)  # a second try (the reasons graph failing, a hot swap)

        try:
            return await run(runtime, admission)
        except ShuttingDown:
            if call.version is not None:
                raise
            model_card = runtime.model_card
            successor = self._registry.resolve(
                model_card.name, None, model_card.kind, computes_history
            )
            if successor is runtime or _contract(successor.model_card) != _contract(model_card):
                raise
            _report(call, successor)
            return await run(successor, None)

    async def _image_rows(self, images: list[bytes], model_card: ModelCard) -> np.ndarray:
        assert model_card.image is not None  # only image models take images
        decoded = await self._decode(images, model_card.image)
        return to_input_rows(np.stack(decoded), model_card.image, model_card.input)

    async def _decode(self, images: list[bytes], prep: ImagePreprocessing) -> list[np.ndarray]:
        """Pixels of each image; small ones on the event loop, others in the decode threads."""
        max_pixels = self._decode_config.max_image_pixels
        count = len(images)
        if sum(map(len, images)) <= self._decode_config.inline_bytes:
            return [_decode_nth(i, data, prep, max_pixels, count) for i, data in enumerate(images)]
        if self._decoders is None:
            raise RuntimeError("the data plane was not started")
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(
            *(
                loop.run_in_executor(self._decoders, _decode_nth, i, data, prep, max_pixels, count)
                for i, data in enumerate(images)
            ),
            return_exceptions=True,
        )
        pixels: list[np.ndarray] = []
        for outcome in decoded:
            if isinstance(outcome, BaseException):
                raise outcome
            pixels.append(outcome)
        return pixels


async def _explain(
    call: InferenceCall,
    runtime: ModelRuntime,
    results: list[dict[str, Any]],
    mode: ReasonsMode,
    values_of: Callable[[int], list[float]],
    known: Mapping[int, np.ndarray | None],
    subjects: list[tuple[Any, Any]] | None = None,
    order: tuple[str, ...] = FEATURES,
) -> None:
    """Give the results that need them (flagged ones, or all, or none) their reasons: from
    the attributions `known` already (by result index, in the card's input order; None
    where the graph failed on them), the others from one batched run of the model's
    reasons graph. Models without one give none. The score stands without its reasons:
    where they cannot be had (the graph failing, the version unloading, the queue past
    the deadline), they are null, not an error."""
    if mode == "never" or runtime.explainer is None:
        return
    wanted = [i for i, r in enumerate(results) if mode == "always" or r["decision"] != "approve"]
    model_card = runtime.model_card
    if not wanted or not explains(model_card):  # most answers are approvals: checked last
        return
    values = {i: values_of(i) for i in wanted}
    missing = [i for i in wanted if i not in known]
    attributions_of = dict(known)
    if missing:
        sent = np.asarray([values[i] for i in missing], dtype=np.float32)
        rows = in_card_order(sent, model_card, order)
        try:
            explained = await runtime.explainer.infer(rows, call.deadline)
        except ServingError as exc:
            name = f"{model_card.name}/{model_card.version}"
            logger.warning("model %s: no reasons for %d results: %s", name, len(missing), exc)
            attributions_of.update(dict.fromkeys(missing))
        else:
            attributions_of.update(zip(missing, runtime.split_explained(explained)[1], strict=True))
    assert model_card.tabular is not None
    columns = model_card.tabular.features
    for index in wanted:
        attributions = attributions_of[index]
        if attributions is None:
            results[index]["reasons"] = None
            continue
        subject = subjects[index] if subjects else (None, None)
        results[index]["reasons"] = top_reasons(
            dict(zip(order, values[index], strict=True)),
            dict(zip(columns, attributions.tolist(), strict=True)),
            *subject,
        )


def _transaction_rows(model_card: ModelCard, transactions: TransactionRows) -> np.ndarray:
    return transactions.columns_for(model_card)


def _computed_by_history(model_card: ModelCard) -> None:
    assert model_card.tabular is not None
    unknown = [f for f in model_card.tabular.features if f not in ALL_FEATURES]
    if unknown:
        raise WrongModelKind(
            f"model {model_card.name!r} version {model_card.version} reads columns the "
            f"history does not compute ({', '.join(unknown)}): score it with its own inputs"
        )


def _takes_sent_features(model_card: ModelCard) -> None:
    if not needs_history(model_card):
        return
    assert model_card.tabular is not None
    computed = [FEATURE_NAMES.get(f, f) for f in model_card.tabular.features if f not in FEATURES]
    raise NeedsHistory(
        f"model {model_card.name!r} version {model_card.version} also takes features only "
        f"the service's history computes ({', '.join(computed)}): send raw payments to "
        "/v1/fraud/transactions, or name a version that takes the benchmark's 15 features"
    )


@dataclass(slots=True)
class _Outcome:
    """What the batchers gave: the version that answered and its outputs, and where the
    rows went through the reasons graph, their attributions or that the graph failed."""

    runtime: ModelRuntime
    outputs: np.ndarray
    attributions: np.ndarray | None = None
    reasons_failed: bool = False


def _made_once(rows: Rows) -> Rows:
    """Deferred rows that a second try reuses rather than makes again (making them may
    record payments)."""
    if not isinstance(rows, DeferredRows):
        return rows
    made: list[np.ndarray] = []

    def make() -> np.ndarray:
        if not made:
            made.append(rows.make())
        return made[0]

    return DeferredRows(rows.size, make)


def _batcher(runtime: ModelRuntime, explained: bool) -> DynamicBatcher:
    """The reasons graph's batcher for rows that all want reasons, where the version's
    reasons can be given; else the model's."""
    if explained and runtime.explainer is not None and explains(runtime.model_card):
        return runtime.explainer
    return runtime.batcher


def _report(call: InferenceCall, runtime: ModelRuntime) -> None:
    call.report.model = runtime.model_card.name
    call.report.version = runtime.model_card.version


T = TypeVar("T")


async def _unless_client_leaves(
    call: InferenceCall, batcher: DynamicBatcher, work: Coroutine[Any, Any, T]
) -> T:
    """Await `work`; if the client hangs up first, cancel it and raise `ClientGone`.

    Cancelled, a request's rows that are still queued leave the queue, and the model's time
    goes to clients that still wait (a client that timed out and retried would otherwise be
    served twice).
    """
    if call.client_gone is None or batcher.expected_wait() < WATCH_CLIENT_AFTER_S:
        return await work  # its own rows are counted in the wait
    answer = asyncio.ensure_future(work)
    hangup = asyncio.ensure_future(call.client_gone())
    try:
        await asyncio.wait((answer, hangup), return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            raise ClientGone("the client closed the connection before its answer was ready")
        return await answer
    finally:
        hangup.cancel()
        answer.cancel()


def _contract(model_card: ModelCard) -> tuple[object, ...]:
    """What must match for one version's input rows and outputs to fit another."""
    features = model_card.tabular.features if model_card.tabular else None
    return (model_card.input, model_card.image, features, model_card.labels)


def _decode_nth(
    index: int, data: bytes, prep: ImagePreprocessing, max_pixels: int, count: int
) -> np.ndarray:
    try:
        return decode_image(data, prep, max_pixels)
    except ServingError as exc:
        if count > 1:
            exc.message = f"file {index}: {exc.message}"
        raise


def _check_finite(probabilities: np.ndarray | list[float]) -> None:
    # For a few rows, Python floats are checked in a tenth of numpy's call overhead.
    if isinstance(probabilities, np.ndarray) and probabilities.size <= 64:
        probabilities = probabilities.ravel().tolist()
    if isinstance(probabilities, list):
        finite = all(map(math.isfinite, probabilities))
    else:
        finite = bool(np.isfinite(probabilities).all())
    if not finite:
        raise InferenceFailed("the model produced non-finite probabilities")
