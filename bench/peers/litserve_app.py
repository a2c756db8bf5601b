"""LitServe peer: both models as `LitAPI`s with LitServe's batching (`max_batch_size`,
`batch_timeout`), as its batching guide shows. Requests are JSON, as LitServe's image
examples take them: `{"images": [base64 JPEG, ...]}`; transactions as deepserve takes them.

    python -m bench.peers.litserve_app PORT      (in a virtual environment with litserve)
"""

from __future__ import annotations

import base64
import sys

import litserve as ls
import numpy as np

from bench.peers.common import Model, decision, decode, feature_row, top_k


class Classify(ls.LitAPI):
    """A request's images, however many, are one item of a batch of requests."""

    def setup(self, device: str) -> None:
        self.model = Model("cifar10")

    def decode_request(self, request: dict) -> np.ndarray:
        return np.stack([decode(base64.b64decode(i), self.model.card) for i in request["images"]])

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return inputs  # requests of different sizes: stacked in `predict`

    def predict(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        sizes = [len(images) for images in batch]
        probabilities = self.model.run(np.concatenate(batch))
        return np.split(probabilities, np.cumsum(sizes)[:-1])

    def unbatch(self, output: list[np.ndarray]) -> list[np.ndarray]:
        return output

    def encode_response(self, output: np.ndarray) -> dict:
        return {"results": [{"predictions": top_k(p, self.model.labels)} for p in output]}


class Score(ls.LitAPI):
    def setup(self, device: str) -> None:
        self.model = Model("fraud")

    def decode_request(self, request: dict) -> tuple[list[dict], np.ndarray]:
        transactions = request.get("transactions", [request])
        return transactions, np.stack([feature_row(t, self.model.card) for t in transactions])

    def batch(self, inputs: list[tuple[list[dict], np.ndarray]]) -> list:
        return inputs

    def predict(self, batch: list[tuple[list[dict], np.ndarray]]) -> list:
        sizes = [len(rows) for _, rows in batch]
        scores = self.model.run(np.concatenate([rows for _, rows in batch]))[:, 0]
        parts = np.split(scores, np.cumsum(sizes)[:-1])
        return [(t, p) for (t, _), p in zip(batch, parts, strict=True)]

    def unbatch(self, output: list) -> list:
        return output

    def encode_response(self, output: tuple[list[dict], np.ndarray]) -> dict:
        transactions, scores = output
        return {
            "results": [
                {
                    "transaction_id": t["transaction_id"],
                    "fraud_probability": float(p),
                    "decision": decision(float(p), self.model.card),
                }
                for t, p in zip(transactions, scores, strict=True)
            ]
        }


def main() -> None:
    apis = [
        Classify(api_path="/classify", max_batch_size=32, batch_timeout=0.002),
        Score(api_path="/score", max_batch_size=256, batch_timeout=0.002),
    ]
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=1)
    server.run(
        host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", generate_client_file=False
    )


if __name__ == "__main__":
    main()
