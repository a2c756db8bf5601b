"""The hardware limit: ONNX Runtime on the same model file, in process, no HTTP.

Uses the service's own runtime loader and session options (same thread settings), feeds
real inputs prepared as the service prepares them, and finds the best batch size.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.codecs.images import decode_image, to_input_rows
from app.codecs.transactions import decode_transactions, needs_history
from app.model_card import ModelCard
from app.serving.providers import choose_providers
from app.serving.repository import VersionDir, discover, read_card
from app.serving.runtime import ModelRuntime
from app.settings import Settings


@dataclass(frozen=True)
class Limit:
    model: str
    version: int
    items_per_s: dict[int, float]  # batch size -> items per second, median of the rounds
    samples: dict[int, list[float]]  # batch size -> items per second in each round
    single_p50_ms: float  # one item, batch of 1, median

    @property
    def best_batch(self) -> int:
        return max(self.items_per_s, key=lambda b: self.items_per_s[b])

    @property
    def best_items_per_s(self) -> float:
        return self.items_per_s[self.best_batch]


def measure(
    model: str,
    settings: Settings,
    images: list[bytes],
    transactions: list[dict],
    batch_sizes: list[int],
    seconds_each: float = 1.0,
    rounds: int = 3,
) -> Limit:
    """Items per second at each batch size: the median of `rounds` rounds that each time
    every size for `seconds_each`. On a shared machine one timing per size is as much the
    neighbours' load as the model's, and the best of such timings is the luckiest one."""
    version = stateless_version(settings.model_repository, model)
    card = read_card(version)
    config = settings.registry_config()
    runtime = ModelRuntime.load(
        card, version.onnx_path, config.runtime, choose_providers(config.device)
    )
    rows = input_rows(card, images, transactions, max(batch_sizes))
    runtime.warm_up()
    samples: dict[int, list[float]] = {batch: [] for batch in batch_sizes}
    for _ in range(rounds):
        for batch in batch_sizes:
            chunk = rows[:batch]
            runtime.run_batch(chunk)
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds_each:
                runtime.run_batch(chunk)
                count += 1
            samples[batch].append(count * batch / (time.perf_counter() - started))
    items_per_s = {batch: float(np.median(rates)) for batch, rates in samples.items()}
    single = []
    for i in range(200):
        started = time.perf_counter()
        runtime.run_batch(rows[i % len(rows) : i % len(rows) + 1])
        single.append(time.perf_counter() - started)
    return Limit(model, card.version, items_per_s, samples, float(np.median(single)) * 1000)


def stateless_version(repository: Path, model: str) -> VersionDir:
    """The version `/v1/fraud/score` and `/v1/classify` serve when none is named, so the
    one every row that sends its inputs measures: the newest whose inputs a client sends (a
    fraud version that needs the history serves the stateful route)."""
    versions = discover(repository, [model])[model]
    sendable = [v for v in versions if not needs_history(read_card(v))]
    return (sendable or versions)[-1]


def combined(start: Limit, end: Limit) -> Limit:
    """One limit from measurements at the start and at the end of a run: per batch size
    the median over the rounds of both, so that the limit follows a shared machine's load
    as it drifts over the twenty minutes between them."""
    samples = {batch: start.samples[batch] + end.samples[batch] for batch in start.samples}
    return Limit(
        start.model,
        start.version,
        {batch: float(np.median(rates)) for batch, rates in samples.items()},
        samples,
        (start.single_p50_ms + end.single_p50_ms) / 2,
    )


def input_rows(
    card: ModelCard, images: list[bytes], transactions: list[dict], count: int
) -> np.ndarray:
    if card.image is not None:
        pixels = np.stack(
            [decode_image(images[i % len(images)], card.image, 10**8) for i in range(count)]
        )
        return to_input_rows(pixels, card.image, card.input)
    batch = [transactions[i % len(transactions)] for i in range(count)]
    body = json.dumps({"transactions": batch}).encode()
    return decode_transactions(body, count).columns_for(card)
