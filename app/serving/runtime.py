"""One model version in ONNX Runtime: its session, its batcher, and its warm-up.

Routes never see an `InferenceSession`; they reach a `ModelRuntime` through the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.model_card import ModelCard, TensorSpec
from app.serving.batching import BatchObserver, DynamicBatcher
from app.serving.config import RuntimeConfig
from app.serving.io_binding import BoundSession
from app.serving.providers import (
    CUDA,
    GPU_PROVIDERS,
    Precision,
    ProviderChoice,
    session_options,
)

logger = logging.getLogger(__name__)

# The reasons graph's batcher reports its metrics under the model's name with this suffix.
REASONS_SUFFIX = ":reasons"

_ORT_TYPES = {
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "float64": "tensor(double)",
    "uint8": "tensor(uint8)",
    "int64": "tensor(int64)",
    "int32": "tensor(int32)",
}


class ModelLoadError(Exception):
    """The ONNX file does not load, or does not match its model card."""


# Start-up runs a full batch only when it takes at most this long at the rate measured so far.
FULL_BATCH_WARM_UP_S = 0.25


class ModelRuntime:
    """A loaded, checked ONNX session for one card. Create with `load` off the event loop."""

    def __init__(
        self,
        model_card: ModelCard,
        session: ort.InferenceSession,
        config: RuntimeConfig,
        observer: BatchObserver | None = None,
        reasons_session: ort.InferenceSession | None = None,
        reasons_observer: BatchObserver | None = None,
        precision: Precision = "fp32",
    ) -> None:
        self.model_card = model_card
        self.session = session
        self.precision = precision
        self._reasons_session = reasons_session
        self.providers = session.get_providers()
        self._input_name = model_card.input.name
        self._output_name = model_card.outputs[0].name
        overrides = config.batching_for(model_card.name)
        self.max_batch_size = _max_batch_size(model_card, config)
        delay = overrides.max_queue_delay_ms
        self.max_queue_delay_ms = model_card.batching.max_queue_delay_ms if delay is None else delay
        self._inline_budget_s = config.inline_budget_ms / 1000.0
        # Shapes that repeat (CUDA graphs, TensorRT profiles): every batch padded up to one.
        smaller = {b for b in config.batch_buckets if b < self.max_batch_size}
        self.buckets = [*sorted(smaller), self.max_batch_size] if config.batch_buckets else []
        on_gpu = self.providers[0] in GPU_PROVIDERS
        self._bound: BoundSession | None = None
        self._bound_reasons: BoundSession | None = None
        if config.io_binding == "on" or (config.io_binding == "auto" and on_gpu):
            try:
                self._bind(on_gpu)
            except ValueError as exc:  # an output of no fixed size: plain runs serve it
                logger.warning(
                    "model %s/%s: runs unbound: %s", model_card.name, model_card.version, exc
                )
                self._bound = self._bound_reasons = None
        self.batcher = DynamicBatcher(
            self.run_batch,
            name=f"{model_card.name}/{model_card.version}",
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_ms,
            max_queue_items=config.max_queue_items,
            observer=observer,
        )
        # The reasons graph batches on its own: only rows that need reasons go through it,
        # and every row of a request that wants reasons for all (see `run_explained`).
        self.explainer: DynamicBatcher | None = None
        if reasons_session is not None:
            self.explainer = DynamicBatcher(
                self.run_explained,
                name=f"{model_card.name}/{model_card.version}/reasons",
                max_batch_size=self.max_batch_size,
                max_queue_delay_ms=self.max_queue_delay_ms,
                max_queue_items=config.max_queue_items,
                observer=reasons_observer,
            )

    @property
    def input_memory(self) -> str | None:
        """Where bound runs take their input from (`cpu`, `cuda`, `cuda_pinned`); None
        where runs are not bound."""
        return self._bound.input_device if self._bound is not None else None

    def _bind(self, on_gpu: bool) -> None:
        """Buffers made once per bucket (powers of two up to the full batch where no
        buckets are set), on the device that runs the model."""
        if not self.buckets:
            self.buckets = _powers_of_two(self.max_batch_size)
        cuda = self.session.get_provider_options().get(CUDA, {})
        device, device_id = ("cuda", int(cuda.get("device_id", 0))) if on_gpu else ("cpu", 0)
        graphs = on_gpu and cuda.get("enable_cuda_graph") == "1"
        self._bound = BoundSession(
            self.session,
            self._input_name,
            [self._output_name],
            self.buckets,
            device,
            device_id,
            graphs,
        )
        reasons = self.model_card.reasons
        if self._reasons_session is not None and reasons is not None:
            names = (
                [reasons.score_output, reasons.output] if reasons.score_output else [reasons.output]
            )
            self._bound_reasons = BoundSession(
                self._reasons_session,
                self._input_name,
                names,
                self.buckets,
                device,
                device_id,
                graphs,
            )

    @property
    def queued_rows(self) -> int:
        """Rows waiting for the model and for its reasons graph."""
        explaining = self.explainer.queued_rows if self.explainer is not None else 0
        return self.batcher.queued_rows + explaining

    def start(self) -> None:
        self.batcher.start()
        if self.explainer is not None:
            self.explainer.start()

    async def close(self, timeout_s: float) -> None:
        """Answer what is queued (within `timeout_s`), then stop the batchers."""
        batchers = [b for b in (self.batcher, self.explainer) if b is not None]
        await asyncio.gather(*(b.close(timeout_s) for b in batchers))

    @classmethod
    def load(
        cls,
        card: ModelCard,
        onnx_path: Path,
        config: RuntimeConfig,
        choice: ProviderChoice,
        observer: BatchObserver | None = None,
        reasons_observer: BatchObserver | None = None,
    ) -> ModelRuntime:
        """Create the session (and the reasons graph's) and check it against the card
        (blocking)."""
        row_dims = [dim or 1 for dim in card.input.shape[1:]]  # fixed: checked below
        choice = choice.shaped_for(card.input.name, row_dims, _max_batch_size(card, config))
        graph, precision, choice = choice.graph_for(card, onnx_path)
        session = _session(graph, config, choice)
        _check_tensor(card.input, session.get_inputs(), "input")
        for spec in card.outputs:
            _check_tensor(spec, session.get_outputs(), "output")
        reasons_session = None
        if card.reasons is not None:
            try:
                reasons_session = _session(onnx_path.with_name(card.reasons.file), config, choice)
                _check_tensor(card.input, reasons_session.get_inputs(), "input")
                attributions = TensorSpec(
                    name=card.reasons.output, dtype="float32", shape=card.input.shape
                )
                _check_tensor(attributions, reasons_session.get_outputs(), "output")
                if card.reasons.score_output is not None:
                    score = card.outputs[0].model_copy(update={"name": card.reasons.score_output})
                    _check_tensor(score, reasons_session.get_outputs(), "output")
            except ModelLoadError as exc:  # the scores stand without their reasons
                logger.error(
                    "model %s/%s: served without reasons: %s", card.name, card.version, exc
                )
                reasons_session = None
        wanted = choice.names[0]
        if wanted not in session.get_providers():
            logger.warning(
                "model %s/%s: asked for %s, ONNX Runtime gave %s",
                card.name,
                card.version,
                wanted,
                session.get_providers(),
            )
        return cls(card, session, config, observer, reasons_session, reasons_observer, precision)

    def run_explained(self, rows: np.ndarray) -> np.ndarray:
        """The model's outputs for input rows, then each feature's attribution, side by side
        (split them with `split_explained`; blocking). One run of the reasons graph where it
        gives the outputs too, else the model's then the reasons graph's."""
        reasons = self.model_card.reasons
        assert self._reasons_session is not None and reasons is not None
        count = len(rows)
        padded = self._padded(rows)
        if self._bound_reasons is not None:
            ran = self._bound_reasons.run(padded)
        elif reasons.score_output is not None:
            ran = self._reasons_session.run(
                [reasons.score_output, reasons.output], {self._input_name: padded}
            )
        else:
            ran = self._reasons_session.run([reasons.output], {self._input_name: padded})
        if reasons.score_output is not None:
            outputs, attributions = ran
            outputs = self._transformed(outputs[:count])
        else:
            outputs = self.run_batch(rows)
            (attributions,) = ran
        return np.concatenate([outputs.reshape(count, -1), attributions[:count]], axis=1)

    def split_explained(self, explained: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`run_explained`'s rows -> (the model's outputs, the attributions)."""
        columns = explained.shape[1] - self.model_card.input.shape[-1]
        return explained[:, :columns], explained[:, columns:]

    def run_batch(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities for a batch of input rows (blocking: runs in the batcher's thread)."""
        padded = self._padded(rows)
        if self._bound is not None:
            (outputs,) = self._bound.run(padded)
        else:
            (outputs,) = self.session.run([self._output_name], {self._input_name: padded})
        return self._transformed(outputs[: len(rows)])

    def _padded(self, rows: np.ndarray) -> np.ndarray:
        """`rows` and copies of its last row up to the next bucket (as they are without
        buckets, or past the largest). Copies of a real row keep every padded row a valid
        input, whatever the graph computes from it."""
        size = next((b for b in self.buckets if b >= len(rows)), len(rows))
        if size == len(rows):
            return rows
        copies = np.broadcast_to(rows[-1:], (size - len(rows), *rows.shape[1:]))
        return np.concatenate([rows, copies])

    def _transformed(self, outputs: np.ndarray) -> np.ndarray:
        transform = self.model_card.output_transform
        if transform == "softmax":
            shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
            outputs = shifted / shifted.sum(axis=1, keepdims=True)
        elif transform == "sigmoid":
            outputs = 1.0 / (1.0 + np.exp(-outputs))
        return outputs

    def warm_up(self) -> float:
        """Time and warm the batch sizes the batchers need (`_warm`; blocking); seconds."""
        started = time.perf_counter()
        try:
            self._warm(self.run_batch, self.batcher)
        except Exception as exc:  # ORT raises several types for a graph that cannot run
            raise ModelLoadError(f"the model failed its warm-up: {exc}") from exc
        if self.explainer is not None:
            try:
                self._warm(self.run_explained, self.explainer)
            except Exception as exc:  # the scores stand without their reasons
                card = self.model_card
                logger.error(
                    "model %s/%s: served without reasons: the reasons graph failed its warm-up: %s",
                    card.name,
                    card.version,
                    exc,
                )
                self.explainer, self._reasons_session = None, None  # not started yet
        self._release_warm_up_memory()
        return time.perf_counter() - started

    def _release_warm_up_memory(self) -> None:
        """Give back what the largest warm-up batches made ONNX Runtime's CPU arenas hold
        (about 200 MB over the committed models): an idle server keeps what one row needs,
        and a busy one grows again to what its batches need."""
        spec = self.model_card.input
        rows = np.zeros([1, *(dim or 1 for dim in spec.shape[1:])], dtype=spec.dtype)
        options = ort.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        try:
            self.session.run([self._output_name], {self._input_name: rows}, options)
            if self._reasons_session is not None and self.model_card.reasons is not None:
                output = self.model_card.reasons.output
                self._reasons_session.run([output], {self._input_name: rows}, options)
        except Exception as exc:  # ORT raises several types; memory only, never fatal
            logger.warning("model %s: arena not released: %s", self.model_card.name, exc)

    def _warm(self, run: Callable[[np.ndarray], np.ndarray], batcher: DynamicBatcher) -> None:
        """Times the sizes up to the inline budget, so the batcher runs the batches that fit
        it on the event loop, and the full batch where start-up can afford it, which tells
        the batcher how fast the queue drains (admission by deadline)."""
        sizes = _powers_of_two(batcher.max_batch_size)
        spec = self.model_card.input
        inline_rows, within_budget, per_row = 0, True, 0.0
        for size in sizes:
            full = size == batcher.max_batch_size
            # Past the budget only the full batch runs: once it has, ONNX Runtime's arena
            # holds the largest batch, and a first run at a smaller size costs no more than
            # the next (measured). A full batch too long for start-up (a 224x224 network's
            # 32 take seconds) keeps the last size's rate, which full batches then correct,
            # and grows the arena on its first real run.
            if within_budget:
                rows = _zero_rows(spec, size)
                run(rows)
                seconds = _fastest_of_three(run, rows)
                within_budget = seconds <= self._inline_budget_s
                if within_budget:
                    inline_rows = size
                per_row = seconds / size
            elif full and per_row * size <= FULL_BATCH_WARM_UP_S:
                # One timing is enough here: full batches keep the batcher's figure current.
                started_batch = time.perf_counter()
                run(_zero_rows(spec, size))
                per_row = (time.perf_counter() - started_batch) / size
        batcher.row_seconds = per_row
        batcher.inline_rows = inline_rows


def _powers_of_two(max_batch_size: int) -> list[int]:
    return sorted({*(1 << i for i in range(max_batch_size.bit_length())), max_batch_size})


def _max_batch_size(model_card: ModelCard, config: RuntimeConfig) -> int:
    """The settings' value where they set one, else the card's."""
    override = config.batching_for(model_card.name).max_batch_size
    return override or model_card.batching.max_batch_size


def _zero_rows(spec: TensorSpec, size: int) -> np.ndarray:
    shape = [size, *(dim or 1 for dim in spec.shape[1:])]  # dims are fixed: checked at load
    return np.zeros(shape, dtype=spec.dtype)


def _fastest_of_three(run: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
    """Seconds for one batch; the fastest of three, so a busy machine does not decide."""
    fastest = float("inf")
    for _ in range(3):
        timed = time.perf_counter()
        run(rows)
        fastest = min(fastest, time.perf_counter() - timed)
    return fastest


def _session(path: Path, config: RuntimeConfig, choice: ProviderChoice) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(path), sess_options=session_options(config.session), providers=choice.providers
        )
    except Exception as exc:  # ORT raises several unrelated types for a bad file
        raise ModelLoadError(f"ONNX Runtime could not load {path}: {exc}") from exc


def _check_tensor(spec: TensorSpec, actual: list[ort.NodeArg], role: str) -> None:
    by_name = {arg.name: arg for arg in actual}
    if spec.name not in by_name:
        raise ModelLoadError(
            f"the card's {role} {spec.name!r} is not in the graph, which has {sorted(by_name)}"
        )
    arg = by_name[spec.name]
    if arg.type != _ORT_TYPES[spec.dtype]:
        raise ModelLoadError(
            f"{role} {spec.name!r} is {arg.type} in the graph, {spec.dtype} in the card"
        )
    if len(arg.shape) != len(spec.shape):
        raise ModelLoadError(
            f"{role} {spec.name!r} has shape {arg.shape} in the graph, {spec.shape} in the card"
        )
    for graph_dim, card_dim in zip(arg.shape[1:], spec.shape[1:], strict=True):
        if isinstance(graph_dim, int) and card_dim is not None and graph_dim != card_dim:
            raise ModelLoadError(
                f"{role} {spec.name!r} has shape {arg.shape} in the graph, {spec.shape} in the card"
            )
    if role == "input" and any(dim is None for dim in spec.shape[1:]):
        raise ModelLoadError(f"input {spec.name!r}: only the batch axis may be dynamic")
