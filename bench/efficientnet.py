"""What a 224x224 ImageNet network costs on this machine's cores: the published `cat-vs-dog`
(EfficientNet-Lite0 from ImageNet) in process at each batch size, and served through
`/v1/models/cat-vs-dog/classify`, one CIFAR-10 test JPEG per request (decoded and resized to
224 by the service, as its card says), at concurrency 1 and 64.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from app.model_card import ModelCard
from app.serving.repository import read_card
from app.settings import Settings
from bench import inprocess
from bench.inprocess import stateless_version
from bench.procs import free_port
from bench.systems import SYSTEMS, start, stop_process
from bench.workloads import WORKLOADS, build

MODEL = "cat-vs-dog"
BATCH_SIZES = [1, 4, 8, 16, 32]
LEVELS = (1, 64)
# Between windows: when wrk stops at c=64 the server still holds up to 64 requests, about a
# second of work for this network, and a c=1 window started at once would time that backlog.
SETTLE_S = 3.0


def check_model(settings: Settings) -> ModelCard:
    """The served `cat-vs-dog` card; exits if it is not the 224x224 network (checked before
    any section runs, so a long run does not end without its results)."""
    card = read_card(stateless_version(settings.model_repository, MODEL))
    if card.image is None or card.image.height < 128:
        raise SystemExit(f"efficientnet: {MODEL}/{card.version} is not the 224x224 network")
    return card


def measure(
    settings: Settings,
    images: list[bytes],
    folder: Path,
    rounds: int,
    window_s: float,
    seconds_each: float,
    bodies: int,
) -> dict:
    """In-process images/s per batch size, then served images/s and latencies per level,
    every round kept."""
    card = check_model(settings)
    limit = inprocess.measure(
        MODEL, settings, images, [], BATCH_SIZES, seconds_each=seconds_each, rounds=rounds
    )
    print(
        f"  in process: best {limit.best_items_per_s:.1f} images/s at batch {limit.best_batch}",
        flush=True,
    )
    requests = build(WORKLOADS["image-1"], "deepserve", images, [], folder, bodies)
    requests = dataclasses.replace(requests, path=f"/v1/models/{MODEL}/classify")
    running = start(SYSTEMS["deepserve"], free_port(), timeout_s=300)
    served: dict[int, list[dict]] = {level: [] for level in LEVELS}
    try:
        requests.run(running.base, 8, 3.0)  # warm-up
        for _ in range(rounds):
            for level in LEVELS:
                time.sleep(SETTLE_S)
                window = requests.run(running.base, level, window_s)
                answered = window.requests - window.errors
                served[level].append(
                    {
                        "images_per_s": round(window.rps * answered / max(window.requests, 1), 2),
                        "p50_ms": round(window.p50_ms, 1),
                        "p99_ms": round(window.p99_ms, 1),
                        "errors": window.errors,
                    }
                )
                print(
                    f"  served c={level}: {served[level][-1]['images_per_s']} images/s, "
                    f"p99 {window.p99_ms:.0f} ms",
                    flush=True,
                )
    finally:
        stop_process(running.process)
    return {
        "model": f"{MODEL}/{card.version}",
        "description": card.description,
        "input": f"{card.image.height}x{card.image.width}",
        "rounds": rounds,
        "in_process": {
            "images_per_s": {str(b): round(r, 2) for b, r in limit.items_per_s.items()},
            "best_batch": limit.best_batch,
            "best_images_per_s": round(limit.best_items_per_s, 2),
            "single_p50_ms": round(limit.single_p50_ms, 2),
        },
        "served": {str(level): windows for level, windows in served.items()},
    }
