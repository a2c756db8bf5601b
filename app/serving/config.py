"""What the serving layer is told by the settings: small frozen values, not `Settings`.

`app.settings` builds these from the environment; tests and tools build them directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class DeviceConfig:
    """Where sessions run: `auto` picks CUDA where a GPU and the CUDA provider are present."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    tensorrt: bool = False
    cuda_device_id: int = 0
    cuda_provider_options: Mapping[str, str] = field(default_factory=dict)
    tensorrt_cache: Path | None = None  # TensorRT's engines and timings, kept across restarts
    cuda_graphs: bool = False  # capture each batch size's run once, replay it after
    fp16: bool = True  # on a GPU, serve a model's float16 graph where its card has one


@dataclass(frozen=True)
class SessionConfig:
    """ONNX Runtime's threading, for every session."""

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    allow_spinning: bool = False


@dataclass(frozen=True)
class BatchingOverride:
    """Batching values that win over a model card's defaults; None keeps the card's."""

    max_batch_size: int | None = None
    max_queue_delay_ms: float | None = None


@dataclass(frozen=True)
class RuntimeConfig:
    """How each model version's session and batcher are set up."""

    session: SessionConfig = SessionConfig()
    max_queue_items: int = 65_536
    inline_budget_ms: float = 1.0
    batch_buckets: tuple[int, ...] = ()  # batches padded up to these sizes; () pads none
    io_binding: Literal["auto", "on", "off"] = "auto"  # auto: on where a GPU serves
    batching: BatchingOverride = BatchingOverride()  # for every model
    batching_by_model: Mapping[str, BatchingOverride] = field(default_factory=dict)

    def batching_for(self, model: str) -> BatchingOverride:
        """The per-model entry wins over the one for every model, value by value."""
        specific = self.batching_by_model.get(model, BatchingOverride())
        delay = specific.max_queue_delay_ms
        return BatchingOverride(
            max_batch_size=specific.max_batch_size or self.batching.max_batch_size,
            max_queue_delay_ms=self.batching.max_queue_delay_ms if delay is None else delay,
        )


@dataclass(frozen=True)
class RegistryConfig:
    """Which models to serve from where, and on what."""

    repository: Path
    models: tuple[str, ...] = ()  # empty: every model found
    keep_versions: int = 0  # ready versions kept per model, newest first; 0: all
    unload_grace_s: float = 30.0  # how long an unloaded version's queue may take to answer
    device: DeviceConfig = DeviceConfig()
    runtime: RuntimeConfig = RuntimeConfig()


@dataclass(frozen=True)
class DecodeConfig:
    """Image decoding: where it runs, and the largest image accepted."""

    threads: int = 1
    inline_bytes: int = 8 * 1024
    max_image_pixels: int = 40_000_000
