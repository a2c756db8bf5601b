"""Choosing ONNX Runtime execution providers: CUDA where a GPU really is, CPU otherwise.

onnxruntime-gpu lists the CUDA provider even on machines without a GPU, and a session asked
for it there logs a stack of CUDA errors before falling back. So we look for a GPU first.
A GPU setting that this machine cannot honour (`DEEPSERVE_DEVICE=cuda` without a GPU,
`DEEPSERVE_TENSORRT` without TensorRT) is one error line in the log and serving on what there
is, never a failed start: the model card and `/v1/models` say which provider serves.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from app.model_card import ModelCard
from app.serving.config import DeviceConfig, SessionConfig

logger = logging.getLogger(__name__)
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)


Precision = Literal["fp32", "fp16"]


@dataclass(frozen=True)
class ProviderChoice:
    providers: list[str | tuple[str, dict[str, Any]]]
    reason: str
    fp16: bool = False  # a GPU serves, and models' float16 graphs may serve on it

    @property
    def names(self) -> list[str]:
        return [p if isinstance(p, str) else p[0] for p in self.providers]

    def graph_for(self, card: ModelCard, onnx_path: Path) -> tuple[Path, Precision, ProviderChoice]:
        """The graph file that serves `card` here, its precision, and the providers for it.
        float32 unless a GPU serves, float16 is allowed, and the card has a float16 graph
        (its parity held). CUDA then runs that graph; TensorRT builds its float16 engine
        from the float32 one, choosing per layer, as it does best from full-precision
        weights."""
        if not self.fp16 or card.fp16 is None:
            return onnx_path, "fp32", self
        if self.names[0] == TENSORRT:
            return onnx_path, "fp16", self._tensorrt_with({"trt_fp16_enable": "1"})
        return onnx_path.with_name(card.fp16.file), "fp16", self

    def shaped_for(
        self, input_name: str, row_dims: list[int], max_batch_size: int
    ) -> ProviderChoice:
        """For one model's sessions: TensorRT (where chosen) gets an explicit shape profile
        from one row to the model's full batch, optimised for the full batch, so that it
        builds one engine at warm-up instead of one per new batch size."""

        def shape(rows: int) -> str:
            return f"{input_name}:" + "x".join(str(d) for d in [rows, *row_dims])

        profile = {
            "trt_profile_min_shapes": shape(1),
            "trt_profile_opt_shapes": shape(max_batch_size),
            "trt_profile_max_shapes": shape(max_batch_size),
        }
        return self._tensorrt_with(profile)

    def _tensorrt_with(self, options: dict[str, str]) -> ProviderChoice:
        """This choice with `options` added to TensorRT's (where it is one of them)."""
        providers = [
            (p[0], {**p[1], **options}) if not isinstance(p, str) and p[0] == TENSORRT else p
            for p in self.providers
        ]
        return replace(self, providers=providers)


def count_cuda_devices() -> int:
    """GPUs the CUDA driver sees; 0 when there is no driver (no CUDA toolkit needed)."""
    for library in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            driver = ctypes.CDLL(library)
        except OSError:
            continue
        count = ctypes.c_int(0)
        if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
        return count.value
    return 0


def choose_providers(device: DeviceConfig) -> ProviderChoice:
    available = ort.get_available_providers()
    if device.device == "cpu":
        return ProviderChoice(["CPUExecutionProvider"], "CPU: DEEPSERVE_DEVICE=cpu")
    if CUDA not in available:
        why = "this onnxruntime build has no CUDA provider"
        return _on_cpu(device, why)
    gpus = count_cuda_devices()
    if gpus == 0:
        return _on_cpu(device, "no CUDA GPU found")
    if device.cuda_device_id >= gpus:
        return _on_cpu(
            device,
            f"DEEPSERVE_CUDA_DEVICE_ID={device.cuda_device_id} but only {gpus} GPU(s) present",
        )
    providers: list[str | tuple[str, dict[str, Any]]] = [
        (CUDA, cuda_options(device)),
        "CPUExecutionProvider",
    ]
    if device.tensorrt and TENSORRT in available:
        if device.tensorrt_cache is not None:
            device.tensorrt_cache.mkdir(parents=True, exist_ok=True)
        providers.insert(0, (TENSORRT, tensorrt_options(device)))
    elif device.tensorrt:
        logger.error(
            "DEEPSERVE_TENSORRT is set, but this onnxruntime build has no TensorRT provider: "
            "serving on CUDA without it"
        )
    return ProviderChoice(
        providers,
        f"CUDA: {gpus} GPU(s) found, using device {device.cuda_device_id}",
        fp16=device.fp16,
    )


def cuda_options(device: DeviceConfig) -> dict[str, str]:
    """The CUDA provider's options: the device, CUDA graphs where asked for (the runtime
    then binds fixed buffers per batch size: `app.serving.io_binding`), and the settings'
    own options last, so that they win."""
    options = {"device_id": str(device.cuda_device_id)}
    if device.cuda_graphs:
        options["enable_cuda_graph"] = "1"
    return options | dict(device.cuda_provider_options)


def tensorrt_options(device: DeviceConfig) -> dict[str, str]:
    """TensorRT's provider options: engines and kernel timings cached on disk (built at
    the first warm-up, reused by every restart after it), where there is a cache folder."""
    options = {"device_id": str(device.cuda_device_id)}
    if device.tensorrt_cache is not None:
        cache = str(device.tensorrt_cache)
        options |= {
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "1",
            "trt_timing_cache_path": cache,
        }
    return options


def _on_cpu(device: DeviceConfig, why: str) -> ProviderChoice:
    """The CPU, saying once why, loudly where the settings asked for a GPU."""
    asked = [
        name
        for name, on in (
            ("DEEPSERVE_DEVICE=cuda", device.device == "cuda"),
            ("DEEPSERVE_TENSORRT", device.tensorrt),
            ("DEEPSERVE_CUDA_GRAPHS", device.cuda_graphs),
        )
        if on
    ]
    if asked:
        logger.error("%s set, but %s: serving on the CPU", " and ".join(asked), why)
    return ProviderChoice(["CPUExecutionProvider"], f"CPU: {why}")


def session_options(config: SessionConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.intra_op_threads
    options.inter_op_num_threads = config.inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    spin = "1" if config.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options
