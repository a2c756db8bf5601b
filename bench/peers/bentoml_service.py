"""BentoML peer: both models as batchable APIs (adaptive batching), as BentoML's
adaptive-batching guide shows. Requests use BentoML's own format: named fields.

    bentoml serve bench.peers.bentoml_service:Peer --port PORT   (in a BentoML environment)
"""

from __future__ import annotations

import bentoml
import numpy as np
from PIL.Image import Image

from bench.peers.common import Model, decision, decode_pil, feature_row, top_k
from bench.transaction_body import Transaction


# Access logs off, as deepserve runs in the benchmark (DEEPSERVE_LOG_LEVEL=warning).
@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class Peer:
    def __init__(self) -> None:
        self.image = Model("cifar10")
        self.fraud = Model("fraud")

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=1000)
    def classify(self, images: list[Image]) -> list[list[dict]]:
        batch = np.stack([decode_pil(image, self.image.card) for image in images])
        return [top_k(p, self.image.labels) for p in self.image.run(batch)]

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=1000)
    def score(self, transactions: list[Transaction]) -> list[dict]:
        rows = np.stack(
            [feature_row(t.model_dump(mode="json"), self.fraud.card) for t in transactions]
        )
        scores = self.fraud.run(rows)[:, 0]
        return [
            {
                "transaction_id": t.transaction_id,
                "fraud_probability": float(p),
                "decision": decision(float(p), self.fraud.card),
            }
            for t, p in zip(transactions, scores, strict=True)
        ]
