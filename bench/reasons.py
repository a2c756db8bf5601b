"""What reasons cost: the fraud model's reasons graph beside scoring alone.

- Through HTTP: `/v1/fraud/score`, one real transaction per request at c=64, with
  `?reasons=never`, the default (reasons for flagged answers only) and `?reasons=always`,
  in rounds side by side in one server.
- In process: ONNX Runtime through the service's runtime, rows a second of the model alone
  and with reasons for every row as `?reasons=always` gets them (`run_explained`: the
  reasons graph alone where it gives the scores too, else the model then it), at batch 1,
  64 and the served batch, in rounds side by side.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np

from app.serving.providers import choose_providers
from app.serving.repository import read_card
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from bench.inprocess import input_rows, stateless_version
from bench.procs import free_port
from bench.systems import SYSTEMS, start, stop_process
from bench.workloads import WORKLOADS, build
from bench.wrk import run_window

LEVEL = 64
MODES = ("never", "flagged", "always")


def measure(
    settings: Settings,
    transactions: list[dict],
    folder: Path,
    rounds: int,
    window_s: float,
    seconds_each: float,
    bodies: int,
) -> dict:
    """The section's figures, every round kept."""
    model = settings.default_fraud_model
    in_process = _in_process(settings, model, transactions, rounds, seconds_each)
    requests = build(WORKLOADS["fraud-1"], "deepserve", [], transactions, folder, bodies)
    running = start(SYSTEMS["deepserve"], free_port(), timeout_s=300)
    http: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        url = running.base + requests.path
        flagged = _flagged(url, requests.bodies)
        run_window(url, requests.content_type, requests.bodies, LEVEL, 2.0)  # warm-up
        for round_ in range(rounds):
            for mode in MODES if round_ % 2 == 0 else MODES[::-1]:
                window = run_window(
                    f"{url}?reasons={mode}",
                    requests.content_type,
                    requests.bodies,
                    LEVEL,
                    window_s,
                )
                served = window.rps * (1 - window.errors / max(window.requests, 1))
                http[mode].append(served)
                print(f"  reasons={mode:8s} c={LEVEL} {served:8.1f} req/s", flush=True)
    finally:
        stop_process(running.process)
    return {
        "model": in_process["model"],
        "rounds": rounds,
        "bodies": len(requests.bodies),
        "bodies_flagged": flagged,
        "http_rps_rounds": {mode: [round(r, 1) for r in rates] for mode, rates in http.items()},
        "in_process": in_process,
    }


def _flagged(url: str, bodies: list[Path]) -> int:
    """How many of the bodies the model flags (each is one transaction): the share of
    requests whose reasons the default computes."""
    count = 0
    for body in bodies:
        request = urllib.request.Request(
            f"{url}?reasons=never", body.read_bytes(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.load(response)
        count += sum(r["decision"] != "approve" for r in answer["results"])
    return count


def _in_process(
    settings: Settings, model: str, transactions: list[dict], rounds: int, seconds_each: float
) -> dict:
    version = stateless_version(settings.model_repository, model)
    card = read_card(version)
    config = settings.registry_config()
    runtime = ModelRuntime.load(
        card, version.onnx_path, config.runtime, choose_providers(config.device)
    )
    if runtime.explainer is None:
        raise SystemExit(f"reasons: {card.name}/{card.version} has no reasons graph")
    sizes = sorted({1, 64, runtime.max_batch_size})
    rows = input_rows(card, [], transactions, max(sizes))
    runtime.warm_up()

    def scored(chunk: np.ndarray) -> None:
        runtime.run_batch(chunk)

    def explained(chunk: np.ndarray) -> None:  # as the service runs `?reasons=always`
        runtime.run_explained(chunk)

    samples: dict[str, dict[int, list[float]]] = {"scored": {}, "explained": {}}
    for _ in range(rounds):
        for size in sizes:
            for name, run in (("scored", scored), ("explained", explained)):
                rate = _rows_per_s(run, rows[:size], seconds_each)
                samples[name].setdefault(size, []).append(rate)
    return {
        "model": f"{card.name}/{card.version}",
        "served_batch": runtime.max_batch_size,
        "rows_per_s_rounds": {
            name: {str(size): [round(r) for r in rates] for size, rates in by_size.items()}
            for name, by_size in samples.items()
        },
    }


def _rows_per_s(run: Callable[[np.ndarray], None], chunk: np.ndarray, seconds: float) -> float:
    run(chunk)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(chunk)
        count += 1
    return count * len(chunk) / (time.perf_counter() - started)


def http_ratios(section: dict) -> dict[str, float]:
    """Requests/s with `flagged` and `always` over `never`: the median of the rounds'
    ratios."""
    rounds = section["http_rps_rounds"]
    never = [max(rate, 1e-9) for rate in rounds["never"]]  # a window of errors serves 0
    return {
        mode: float(np.median([a / b for a, b in zip(rounds[mode], never, strict=True)]))
        for mode in ("flagged", "always")
    }


def in_process_ratios(section: dict) -> dict[int, float]:
    """Per batch size, rows/s with reasons for every row over the model alone: the median
    of the rounds' ratios."""
    rates = section["in_process"]["rows_per_s_rounds"]
    explained, scored = rates["explained"], rates["scored"]
    return {
        int(size): float(
            np.median([e / s for e, s in zip(explained[size], scored[size], strict=True)])
        )
        for size in scored
    }
