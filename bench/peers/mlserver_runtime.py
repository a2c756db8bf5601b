"""MLServer peer: a custom runtime per model that runs its ONNX file in ONNX Runtime, with
MLServer's adaptive batching on (`max_batch_size`, `max_batch_time` in each
`bench/peers/mlserver/<model>/model-settings.json`), as MLServer's custom-runtime and
adaptive-batching guides show. Requests are its v2 REST API's JSON: images as BYTES with
the base64 content type (encoded JPEGs, decoded here), transactions as the model's FP32
feature rows.

    mlserver start bench/peers/mlserver      (in a virtual environment with mlserver)
"""

from __future__ import annotations

import numpy as np
from mlserver import MLModel
from mlserver.codecs import Base64Codec, NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

from bench.peers.common import Model, decode


class ImageRuntime(MLModel):
    async def load(self) -> bool:
        self.model = Model("cifar10")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        images = Base64Codec.decode_input(payload.inputs[0])
        batch = np.stack([decode(data, self.model.card) for data in images])
        probabilities = self.model.run(batch)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("probabilities", probabilities)],
        )


class FraudRuntime(MLModel):
    async def load(self) -> bool:
        self.model = Model("fraud")
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        rows = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        scores = self.model.run(rows)
        return InferenceResponse(
            model_name=self.name,
            outputs=[NumpyCodec.encode_output("fraud_probability", scores)],
        )
