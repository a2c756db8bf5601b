"""Triton peer: the Triton Inference Server that PyTriton bundles, both models as Python
callables that run their ONNX files in ONNX Runtime, Triton's dynamic batcher on, as
PyTriton's quick start and dynamic-batching guide show. Requests are Triton's v2 HTTP API
with binary tensor data: images as encoded JPEGs (BYTES), transactions as the model's FP32
feature rows.

    python -m bench.peers.pytriton_app PORT      (in a virtual environment with PyTriton)

PyTriton's model stub embeds its own libpython 3.11 and loads the interpreter's standard
library: it needs a 3.11 whose library matches (Debian's 3.11.2). With a newer 3.11.x,
multiprocessing's resource tracker fails in the stub
("'_thread.RLock' object has no attribute '_recursion_count'").
"""

from __future__ import annotations

import signal
import sys

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

from bench.peers.common import Model, decode

image = Model("cifar10")
fraud = Model("fraud")


@batch
def classify(images: np.ndarray) -> dict[str, np.ndarray]:
    pixels = np.stack([decode(bytes(item[0]), image.card) for item in images])
    return {"probabilities": image.run(pixels)}


@batch
def score(features: np.ndarray) -> dict[str, np.ndarray]:
    return {"fraud_probability": fraud.run(features.astype(np.float32, copy=False))}


def main() -> None:
    port = int(sys.argv[1])
    config = TritonConfig(
        http_address="127.0.0.1", http_port=port, grpc_port=port + 1, metrics_port=port + 2
    )
    batcher = DynamicBatcher(max_queue_delay_microseconds=2000)
    # PyTriton restricts the statistics API by default, and perf_analyzer, Triton's own
    # load generator, reads it around every window: open that one (the server listens on
    # 127.0.0.1 only), keep the others restricted.
    security = TritonSecurityConfig(
        restricted_endpoints=["shared-memory", "model-repository", "trace", "logging"]
    )
    with Triton(config=config, security_config=security) as triton:
        triton.bind(
            model_name="cifar10",
            infer_func=classify,
            inputs=[Tensor(name="images", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="probabilities", dtype=np.float32, shape=(len(image.labels),))],
            config=ModelConfig(max_batch_size=32, batcher=batcher),
        )
        width = len(fraud.card["tabular"]["features"])
        triton.bind(
            model_name="fraud",
            infer_func=score,
            inputs=[Tensor(name="features", dtype=np.float32, shape=(width,))],
            outputs=[Tensor(name="fraud_probability", dtype=np.float32, shape=(1,))],
            config=ModelConfig(max_batch_size=256, batcher=batcher),
        )
        signal.signal(signal.SIGTERM, lambda *_: triton.stop())
        triton.serve()


if __name__ == "__main__":
    main()
