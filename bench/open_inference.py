"""The Open Inference Protocol (v2) beside `/v1`, side by side on one deepserve process.

For each model (one image, one transaction per request) and concurrency level, every row is
measured once per round, back to back, the order reversed every other round, so that the
machine's drift falls on all rows alike and each v2 row has a `/v1` measurement from the
same minute to be divided by:
- `/v1` driven by wrk (the raw JPEG; the transaction as JSON), as in the systems table;
- v2 REST with the binary tensor data extension, driven by wrk with the bodies
  perf_analyzer sends: the same server path as the next row, with the same generator as
  `/v1`, so the ratio is the server's alone;
- v2 REST (binary) and v2 gRPC, driven by Triton's perf_analyzer.
v2 sends the same items as `/v1`: the JPEG as `images` BYTES, the transaction as the 15
features `/v1` derives from it (`features` FP32).
"""

from __future__ import annotations

import math
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from app.serving.repository import read_card
from app.settings import Settings
from bench import perf_analyzer
from bench.inprocess import stateless_version
from bench.procs import cpu_seconds, free_port, rss_mb
from bench.systems import SYSTEMS, Running, settled_rss, start, stop_process
from bench.workloads import WORKLOADS, Requests, build, build_v2, v2_inputs

WORKLOAD_NAMES = ("image-1", "fraud-1")
MAX_DRAIN_S = 30.0


@dataclass(frozen=True)
class Row:
    system: str
    protocol: str  # "v1" or "v2"
    transport: str  # "HTTP" or "gRPC"
    generator: str  # "wrk" or "perf_analyzer"


V1 = Row("deepserve /v1 (HTTP, wrk)", "v1", "HTTP", "wrk")
ROWS = (
    V1,
    Row("deepserve v2 (HTTP, wrk)", "v2", "HTTP", "wrk"),
    Row("deepserve v2 (HTTP, perf_analyzer)", "v2", "HTTP", "perf_analyzer"),
    Row("deepserve v2 (gRPC, perf_analyzer)", "v2", "gRPC", "perf_analyzer"),
)


@dataclass(frozen=True)
class Timing:
    rounds: int
    wrk_window_s: float  # one wrk window per row and round...
    interval_ms: int  # ...and perf_analyzer's three windows of this add up to about as long
    max_trials: int  # perf_analyzer's windows before it gives up settling
    stable_within: float
    warm_up_s: float

    @classmethod
    def of(cls, rounds: int, stable_within: float, quick: bool) -> Timing:
        if quick:
            return cls(1, 2.0, 500, 3, stable_within, 1.0)
        return cls(rounds, 6.0, 2000, 6, stable_within, 3.0)


@dataclass(frozen=True)
class _Target:
    model: str
    v1: Requests
    v2: Requests
    input_data: Path | None  # perf_analyzer's --input-data
    version: int  # the one both protocols' rows are sent to


def measure(
    settings: Settings,
    images: list[bytes],
    transactions: list[dict],
    folder: Path,
    workloads: list[str],
    levels: list[int],
    timing: Timing,
    bodies: int = 50,
) -> dict:
    """Rows of the section, per workload and level, with each round's throughput."""
    generator: perf_analyzer.Generator | None = None
    unavailable = None
    try:
        generator = perf_analyzer.install()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        unavailable = str(exc)
        print(f"open inference: no perf_analyzer rows ({unavailable})", flush=True)
    rows = [r for r in ROWS if generator is not None or r.generator != "perf_analyzer"]
    targets = {
        workload: _target(settings, workload, images, transactions, folder, bodies, generator)
        for workload in WORKLOAD_NAMES
        if workload in workloads
    }
    out: list[dict] = []
    failures: list[dict] = []
    running = start(SYSTEMS["deepserve"], free_port(), timeout_s=300)
    server = {
        "start_to_ready_s": round(running.start_to_ready_s, 2),
        "rss_mb_idle": round(settled_rss(running), 1),
    }
    print(f"open inference: deepserve on :{running.port}, gRPC :{running.grpc_port}", flush=True)
    try:
        for workload, target in targets.items():
            # Warm-up: first-call allocations, caches, connection pools on both paths.
            for requests in (target.v1, target.v2):
                requests.run(running.base, 8, timing.warm_up_s)
            for concurrency in levels:
                samples: dict[Row, list[dict | None]] = {row: [] for row in rows}
                for round_ in range(timing.rounds):
                    order = rows if round_ % 2 == 0 else rows[::-1]
                    for row in order:
                        try:
                            sample = _sample(row, running, target, concurrency, timing, generator)
                        except RuntimeError as exc:
                            failures.append(
                                {
                                    "system": row.system,
                                    "workload": workload,
                                    "concurrency": concurrency,
                                    "round": round_,
                                    "error": str(exc)[-1000:],
                                }
                            )
                            print(f"  {row.system} failed: {str(exc)[-300:]}", flush=True)
                            sample = None
                        samples[row].append(sample)
                for row in rows:
                    summary = _summary(row, workload, concurrency, samples[row])
                    if summary is None:
                        continue
                    out.append(summary)
                    print(
                        f"  {workload:7s} c={concurrency:<3d} {row.system:36s} "
                        f"{summary['rps']:8.1f} req/s p50 {summary['p50_ms']:7.2f} "
                        f"p99 {summary['p99_ms']:7.2f} ms rounds "
                        + " ".join(
                            f"{r:.0f}" if r is not None else "-" for r in summary["rps_rounds"]
                        ),
                        flush=True,
                    )
        server["rss_mb_peak"] = max([r["rss_mb_peak"] for r in out], default=0.0)
    finally:
        stop_process(running.process)
    return {
        "settings": {
            "rounds": timing.rounds,
            "levels": levels,
            "order": "every row once per round, back to back; reversed every other round",
            "wrk_window_s": timing.wrk_window_s,
            "perf_analyzer": {
                "version": perf_analyzer.VERSION,
                "mode": "synchronous: one thread per concurrent request",
                "measurement_interval_ms": timing.interval_ms,
                "stability_percentage": timing.stable_within * 100,
                "max_trials": timing.max_trials,
                "http": "binary tensor data extension for inputs and outputs",
            },
            "models": {w: t.model for w, t in targets.items()},
            "service": "python -m app, default settings, DEEPSERVE_LOG_LEVEL=warning, "
            "HTTP and gRPC on free ports",
        },
        "perf_analyzer_unavailable": unavailable,
        "server": server,
        "rows": out,
        "failures": failures,
    }


def _target(
    settings: Settings,
    workload: str,
    images: list[bytes],
    transactions: list[dict],
    folder: Path,
    bodies: int,
    generator: perf_analyzer.Generator | None,
) -> _Target:
    spec = WORKLOADS[workload]
    model = settings.default_image_model if spec.model == "image" else settings.default_fraud_model
    # The version both serve when none is asked for (the newest that takes the client's own
    # inputs); v2's rows name it all the same, so that they measure the same file.
    card = read_card(stateless_version(settings.model_repository, model))
    inputs = v2_inputs(spec, images, transactions, card, bodies)
    v1 = build(spec, "deepserve", images, transactions, folder, bodies)
    v2 = build_v2(inputs, model, card.outputs[0].name, folder, card.version)
    data = None
    if generator is not None:
        data = perf_analyzer.write_input_data(inputs, folder / f"perf-analyzer-{workload}.json")
    return _Target(model, v1, v2, data, card.version)


def _sample(
    row: Row,
    running: Running,
    target: _Target,
    concurrency: int,
    timing: Timing,
    generator: perf_analyzer.Generator | None,
) -> dict:
    pid = running.process.pid
    cpu_before, started = cpu_seconds(pid), time.monotonic()
    if row.generator == "wrk":
        requests = target.v1 if row.protocol == "v1" else target.v2
        window = requests.run(running.base, concurrency, timing.wrk_window_s)
        server_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        # wrk leaves the requests of the connections it drops in the server: let them end.
        if math.isfinite(window.p99_ms):
            time.sleep(min(MAX_DRAIN_S, window.p99_ms / 1000))
        served = window.rps * (1 - window.errors / max(window.requests, 1))
        sample = {
            "rps": served,
            "p50_ms": window.p50_ms,
            "p90_ms": window.p90_ms,
            "p99_ms": window.p99_ms,
            "errors": window.errors,
            "generator_cpu": window.generator_cpu,
            "stable": None,  # one window; the rounds say how much it varies
        }
    else:
        assert generator is not None and target.input_data is not None
        grpc = row.transport == "gRPC"
        measured = perf_analyzer.run(
            generator,
            target.model,
            target.version,
            f"127.0.0.1:{running.grpc_port if grpc else running.port}",
            "grpc" if grpc else "http",
            target.input_data,
            concurrency,
            timing.interval_ms,
            timing.stable_within,
            timing.max_trials,
        )
        server_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        sample = {
            "rps": measured.rps,
            "p50_ms": measured.p50_ms,
            "p90_ms": measured.p90_ms,
            "p99_ms": measured.p99_ms,
            "errors": 0,  # perf_analyzer stops at the first failed request
            "generator_cpu": measured.generator_cpu,
            "stable": measured.stable,
        }
    return {**sample, "server_cpu": server_cpu, "rss_mb": rss_mb(pid)}


def _summary(row: Row, workload: str, concurrency: int, samples: list[dict | None]) -> dict | None:
    """The round with the median throughput stands for the row (its latencies too), as the
    systems table keeps the median window; every round's throughput is kept for ratios."""
    measured = [s for s in samples if s is not None]
    if not measured:
        return None
    middle = sorted(measured, key=lambda s: s["rps"])[len(measured) // 2]
    stable = [s["stable"] for s in measured if s["stable"] is not None]
    return {
        "system": row.system,
        "protocol": row.protocol,
        "transport": row.transport,
        "generator": row.generator,
        "workload": workload,
        "concurrency": concurrency,
        "rps": round(middle["rps"], 1),
        "p50_ms": round(middle["p50_ms"], 2),
        "p90_ms": round(middle["p90_ms"], 2),
        "p99_ms": round(middle["p99_ms"], 2),
        "errors": sum(s["errors"] for s in measured),
        "server_cpu": round(middle["server_cpu"], 2),
        "generator_cpu": round(middle["generator_cpu"], 2),
        "rss_mb_peak": round(max(s["rss_mb"] for s in measured), 1),
        "stable": all(stable) if stable else None,
        "rps_rounds": [None if s is None else round(s["rps"], 1) for s in samples],
    }
