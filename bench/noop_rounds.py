"""One transaction a request beside the FastAPI no-ops, side by side.

The systems table measures each system in turn, minutes apart, and on a shared machine
those minutes can move a ratio by a fifth. Here deepserve, the idiomatic no-op and the
lean one run at once (each idle while another is driven), and each round drives every one
of them for one wrk window at c=64, the order reversed every other round; a ratio is the
median of the rounds' ratios.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from bench.procs import free_port
from bench.systems import SYSTEMS, Running, start, stop_process
from bench.workloads import WORKLOADS, build

LEVEL = 64
SYSTEM_NAMES = ("deepserve", "fastapi-noop", "fastapi-noop-lean")


def measure(
    transactions: list[dict], folder: Path, rounds: int, window_s: float, bodies: int
) -> dict:
    """Each system's served requests/s in every round."""
    # The no-ops take deepserve's body at deepserve's route: one set of bodies for all three.
    requests = build(WORKLOADS["fraud-1"], "deepserve", [], transactions, folder, bodies)
    probe = (requests.path, requests.content_type, requests.bodies[0].read_bytes())
    running: dict[str, Running] = {}
    rates: dict[str, list[float]] = {name: [] for name in SYSTEM_NAMES}
    try:
        for name in SYSTEM_NAMES:
            running[name] = start(SYSTEMS[name], free_port(), timeout_s=300, probe=probe)
            requests.run(running[name].base, 8, 2.0)  # warm-up
        for round_ in range(rounds):
            for name in SYSTEM_NAMES if round_ % 2 == 0 else SYSTEM_NAMES[::-1]:
                window = requests.run(running[name].base, LEVEL, window_s)
                served = window.rps * (1 - window.errors / max(window.requests, 1))
                rates[name].append(round(served, 1))
                print(f"  {name:18s} fraud-1 c={LEVEL} {served:8.1f} req/s", flush=True)
                # wrk leaves its last requests in the server: let them end before the next.
                if math.isfinite(window.p99_ms):
                    time.sleep(min(1.0, window.p99_ms / 1000))
    finally:
        for each in running.values():
            stop_process(each.process)
    return {"concurrency": LEVEL, "window_s": window_s, "rps_rounds": rates}


def ratios(section: dict) -> dict[str, float]:
    """deepserve's requests/s over each no-op's: the median of the rounds' ratios."""
    rounds = section["rps_rounds"]
    ours = rounds["deepserve"]
    return {
        name: float(np.median([a / max(b, 1e-9) for a, b in zip(ours, rounds[name], strict=True)]))
        for name in SYSTEM_NAMES[1:]
    }
