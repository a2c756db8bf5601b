"""Runs through ONNX Runtime's I/O binding: buffers made once per batch size, on the model's
device.

A plain `session.run` makes the input and output tensors for every batch, on the GPU with
CUDA, and copies both ways. Bound, each batch size the runtime pads to (its buckets) has an
input and an output buffer on the device, made once: a batch is copied into its size's
input, the model writes its output in place, and only that comes back to the host. Fixed
addresses are also what CUDA graphs need: with them on, ONNX Runtime captures each size's
run once (`gpu_graph_id`, one per bucket) and replays it after.

On CUDA without graphs, the input buffer is pinned host memory rather than the device's
where ONNX Runtime will make one: a batch lands there with a plain memory copy, and ONNX
Runtime moves it to the GPU by DMA (the fastest host-to-device copy there is) as the run
starts. A captured graph needs its input at a fixed device address, so with graphs the
input lives on the device.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

logger = logging.getLogger(__name__)
PINNED = "cuda_pinned"


@dataclass
class _Buffers:
    binding: ort.IOBinding
    input: ort.OrtValue
    outputs: list[ort.OrtValue]
    options: ort.RunOptions


class BoundSession:
    """One session's runs at fixed batch sizes (`run` takes only those)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        input_name: str,
        output_names: list[str],
        sizes: list[int],
        device: str,
        device_id: int = 0,
        cuda_graphs: bool = False,
    ) -> None:
        self._session = session
        # Batches of one session may come from two batchers' threads (the model's, and the
        # reasons graph's where it runs the model first): one run at a time per buffer set.
        self._lock = threading.Lock()
        spec = {arg.name: arg for arg in session.get_inputs() + session.get_outputs()}
        self._buffers: dict[int, _Buffers] = {}
        self.input_device = PINNED if device == "cuda" and not cuda_graphs else device
        for graph_id, size in enumerate(sizes):
            binding = session.io_binding()
            tensor = self._input_buffer(spec[input_name], size, device, device_id)
            binding.bind_ortvalue_input(input_name, tensor)
            outputs = []
            for name in output_names:
                output = _buffer(spec[name], size, device, device_id)
                binding.bind_ortvalue_output(name, output)
                outputs.append(output)
            options = ort.RunOptions()
            if cuda_graphs:
                options.add_run_config_entry("gpu_graph_id", str(graph_id + 1))
            self._buffers[size] = _Buffers(binding, tensor, outputs, options)

    def _input_buffer(
        self, arg: ort.NodeArg, rows: int, device: str, device_id: int
    ) -> ort.OrtValue:
        if self.input_device == PINNED:
            try:
                return _buffer(arg, rows, PINNED, device_id)
            except Exception as exc:  # ONNX Runtime's Python API raises plain Exceptions
                logger.warning("no pinned host memory (%s): inputs go to the device directly", exc)
                self.input_device = device
        return _buffer(arg, rows, device, device_id)

    @property
    def sizes(self) -> list[int]:
        return list(self._buffers)

    def run(self, rows: np.ndarray) -> list[np.ndarray]:
        """The outputs for `rows`, whose count must be one of the sizes (blocking)."""
        buffers = self._buffers[len(rows)]
        with self._lock:
            buffers.input.update_inplace(np.ascontiguousarray(rows))
            self._session.run_with_iobinding(buffers.binding, buffers.options)
            return [output.numpy() for output in buffers.outputs]


_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(bool)": np.bool_,
}


def _buffer(arg: ort.NodeArg, rows: int, device: str, device_id: int) -> ort.OrtValue:
    dims = arg.shape[1:]
    if not all(isinstance(dim, int) for dim in dims):
        raise ValueError(f"{arg.name} has shape {arg.shape}: only the batch axis may be dynamic")
    return ort.OrtValue.ortvalue_from_shape_and_type(
        [rows, *dims], _DTYPES[arg.type], device, device_id
    )
