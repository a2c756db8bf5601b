"""Ray Serve peer: both models behind `@serve.batch`, as Ray Serve's batching guide shows,
with a FastAPI ingress taking the same requests as deepserve.

    python -m bench.peers.ray_serve_app PORT      (in a virtual environment with ray[serve])
"""

import asyncio
import signal
import sys
import threading

import numpy as np
import ray
from fastapi import FastAPI, Request
from ray import serve

from bench.peers.common import Model, decision, decode, feature_row, top_k

api = FastAPI()


# Access logs off, as deepserve runs in the benchmark (DEEPSERVE_LOG_LEVEL=warning).
@serve.deployment(max_ongoing_requests=256, logging_config={"enable_access_log": False})
@serve.ingress(api)
class Peer:
    def __init__(self) -> None:
        self.image = Model("cifar10")
        self.fraud = Model("fraud")

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def classify_batch(self, images: list[np.ndarray]) -> list[list[dict]]:
        probabilities = self.image.run(np.stack(images))
        return [top_k(p, self.image.labels) for p in probabilities]

    @serve.batch(max_batch_size=256, batch_wait_timeout_s=0.002)
    async def score_batch(self, rows: list[np.ndarray]) -> list[float]:
        return [float(p) for p in self.fraud.run(np.stack(rows))[:, 0]]

    @api.post("/v1/classify")
    async def classify(self, request: Request) -> dict:
        if request.headers.get("content-type", "").startswith("image/"):
            encoded = [await request.body()]
        else:
            form = await request.form()
            encoded = [await part.read() for part in form.getlist("file")]
        arrays = [decode(data, self.image.card) for data in encoded]
        results = await asyncio.gather(*(self.classify_batch(a) for a in arrays))
        return {"results": [{"predictions": r} for r in results]}

    @api.post("/v1/fraud/score")
    async def score(self, request: Request) -> dict:
        document = await request.json()
        transactions = document.get("transactions", [document])
        rows = [feature_row(t, self.fraud.card) for t in transactions]
        scores = await asyncio.gather(*(self.score_batch(r) for r in rows))
        return {
            "results": [
                {
                    "transaction_id": t["transaction_id"],
                    "fraud_probability": p,
                    "decision": decision(p, self.fraud.card),
                }
                for t, p in zip(transactions, scores, strict=True)
            ]
        }


def main() -> None:
    port = int(sys.argv[1])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Peer.bind(), route_prefix="/")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
