"""The data plane between routes and runtimes: inputs to rows, rows through the batcher,
outputs to answers. Routes hand over decoded requests and get plain dicts back.
"""

from __future__ import annotations

import asyncio
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from app.batching import Admission
from app.errors import InferenceFailed, ServingError, ShuttingDown, ValidationFailed
from app.images import decode_image, to_input_rows
from app.model_card import ModelCard
from app.registry import ModelRegistry
from app.runtime import ModelRuntime
from app.settings import Settings
from app.transactions import TransactionRows, decide

DEFAULT_TOP_K = 5


class InferenceService:
    def __init__(self, registry: ModelRegistry, settings: Settings) -> None:
        self._registry = registry
        self._settings = settings
        # Image decoding blocks (and mostly releases the GIL): keep it off the event loop.
        self._decoders = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")

    def close(self) -> None:
        self._decoders.shutdown(wait=True)

    def image_model(self, model: str, version: int | None) -> ModelRuntime:
        return self._registry.resolve(model, version, kind="image_classifier")

    def fraud_model(self, model: str, version: int | None) -> ModelRuntime:
        return self._registry.resolve(model, version, kind="tabular_classifier")

    async def classify(
        self,
        runtime: ModelRuntime,
        images: list[bytes],
        top_k: int | None,
        deadline: float,
        pinned: bool = False,
        admission: Admission | None = None,
    ) -> dict[str, Any]:
        card = runtime.card
        assert card.image is not None
        if top_k is None:
            top_k = min(DEFAULT_TOP_K, len(card.labels))
        elif top_k > len(card.labels):
            raise ValidationFailed(
                f"top_k: at most {len(card.labels)} for model {card.name!r}",
                [{"field": "query.top_k", "message": f"at most {len(card.labels)}"}],
            )
        # Admitted before the decoding that a refusal would waste (routes admit earlier still).
        admission = admission or runtime.batcher.admit(len(images), deadline)
        try:
            decoded = await self._decode(images, card)
            rows = to_input_rows(np.stack(decoded), card.image, card.input)  # type: ignore[arg-type]
            runtime, probabilities = await self._infer(runtime, rows, deadline, pinned, admission)
        finally:
            admission.release()
        card = runtime.card
        _check_finite(probabilities)
        best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        labels = card.labels
        results = [
            {"predictions": [{"label": labels[j], "score": float(row[j])} for j in order]}
            for row, order in zip(probabilities, best, strict=True)
        ]
        return {"model": card.name, "version": card.version, "results": results}

    async def _decode(self, images: list[bytes], card: ModelCard) -> list[np.ndarray]:
        """Pixels of each image; small ones on the event loop, others in the decode threads."""
        max_pixels = self._settings.max_image_pixels
        if sum(map(len, images)) <= self._settings.inline_decode_bytes:
            return [
                _decode_nth(i, data, card.image, max_pixels, len(images))
                for i, data in enumerate(images)
            ]
        loop = asyncio.get_running_loop()
        decoded = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._decoders, _decode_nth, i, data, card.image, max_pixels, len(images)
                )
                for i, data in enumerate(images)
            ),
            return_exceptions=True,
        )
        for outcome in decoded:
            if isinstance(outcome, BaseException):
                raise outcome
        return decoded  # type: ignore[return-value]

    async def score(
        self,
        runtime: ModelRuntime,
        transactions: TransactionRows,
        deadline: float,
        pinned: bool = False,
        admission: Admission | None = None,
    ) -> dict[str, Any]:
        card = runtime.card
        assert card.thresholds is not None
        rows = transactions.for_card(card)
        runtime, outputs = await self._infer(runtime, rows, deadline, pinned, admission)
        card = runtime.card
        assert card.thresholds is not None
        fraud = outputs.reshape(len(rows), -1)[:, -1].tolist()  # the last column: fraud
        _check_finite(fraud)
        thresholds = card.thresholds
        results = [
            {
                "transaction_id": t,
                "fraud_probability": p,
                "decision": decide(p, thresholds),
            }
            for t, p in zip(transactions.ids, fraud, strict=True)
        ]
        return {"model": card.name, "version": card.version, "results": results}

    async def _infer(
        self,
        runtime: ModelRuntime,
        rows: np.ndarray,
        deadline: float,
        pinned: bool,
        admission: Admission | None,
    ) -> tuple[ModelRuntime, np.ndarray]:
        """Run rows through the runtime's batcher. If that version was unloaded after the
        request found it (a hot swap), and the request did not name a version, the version
        now served answers instead, provided it takes and means the same rows."""
        try:
            return runtime, await runtime.batcher.infer(rows, deadline, admission)
        except ShuttingDown:
            if pinned:
                raise
            card = runtime.card
            successor = self._registry.resolve(card.name, None, card.kind)
            if successor is runtime or _contract(successor.card) != _contract(card):
                raise
            return successor, await successor.batcher.infer(rows, deadline)


def _contract(card: ModelCard) -> tuple[object, ...]:
    """What must match for one version's input rows and outputs to fit another."""
    return (card.input, card.image, card.tabular, card.labels)


def _decode_nth(index: int, data: bytes, prep: Any, max_pixels: int, count: int) -> np.ndarray:
    try:
        return decode_image(data, prep, max_pixels)
    except ServingError as exc:
        if count > 1:
            exc.message = f"file {index}: {exc.message}"
        raise


def _check_finite(probabilities: np.ndarray | list[float]) -> None:
    # For a few rows, Python floats are checked in a tenth of numpy's call overhead.
    if isinstance(probabilities, list):
        finite = all(map(math.isfinite, probabilities))
    else:
        finite = bool(np.isfinite(probabilities).all())
    if not finite:
        raise InferenceFailed("the model produced non-finite probabilities")
