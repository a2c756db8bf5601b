"""`make bench` / `python -m bench`: the service beside the hardware limit and its peers,
and its Open Inference Protocol (v2) beside its own `/v1`.

Six sections, all by default; `--only systems`, `--only noop`, `--only open-inference`,
`--only fraud-history`, `--only reasons` or `--only efficientnet` runs one.

systems: for each system, start it, warm it up, then for each workload and concurrency
level run wrk in windows until three in a row agree on throughput within 10% (as Triton's
perf_analyzer decides stability), and keep the median of those three. The limits come from
the same run: ONNX Runtime in process on the same model files, and a FastAPI no-op for HTTP
alone. Triton is driven by perf_analyzer too, its own generator.

noop (`bench/noop_rounds.py`): one transaction a request at c=64 in deepserve and the two
FastAPI no-ops, all three running, in rounds side by side. About two minutes.

open-inference (`bench/open_inference.py`): one deepserve process; one image and one
transaction per request at concurrency 1 and 64; `/v1` (wrk), v2 REST with binary tensors
(wrk, and Triton's perf_analyzer) and v2 gRPC (perf_analyzer), side by side in rounds. A few
minutes: `python -m bench --only open-inference`.

fraud-history (`bench/fraud_history.py`): stateful fraud scoring (raw payments, the history
kept by the service) beside stateless `/score`, with the embedded store and with Redis, in
rounds side by side. A few minutes: `python -m bench --only fraud-history`.

reasons (`bench/reasons.py`): what the fraud model's reasons cost, through HTTP (`/score`
with reasons never, for flagged answers, always) and in process (the reasons graph for
every row), side by side in rounds. A few minutes: `python -m bench --only reasons`.

efficientnet (`bench/efficientnet.py`): what the 224x224 ImageNet network (`cat-vs-dog`,
EfficientNet-Lite0) costs: in-process images/s at each batch size, and served images/s and
latencies at concurrency 1 and 64. A few minutes: `python -m bench --only efficientnet`.

Writes `<out>/<date>-<host>.json`, `.md`, and PNGs: one per model, one for open-inference.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import onnxruntime as ort

from app.serving.repository import read_card
from app.settings import Settings
from bench import (
    efficientnet,
    fraud_history,
    inprocess,
    noop_rounds,
    open_inference,
    perf_analyzer,
    reasons,
    report,
)
from bench.inprocess import stateless_version
from bench.procs import cpu_seconds, free_port, rss_mb
from bench.systems import PEERS, SYSTEMS, Running, settled_rss, start, stop_process
from bench.workloads import (
    WORKLOADS,
    Requests,
    build,
    sample_images,
    sample_transactions,
    v2_inputs,
)
from bench.wrk import Window

ROOT = Path(__file__).resolve().parents[1]
STABLE_WITHIN = 0.10
LATENCIES_PER_WINDOW = 10  # a window lasts at least this many median latencies...
SLOWEST_PER_WINDOW = 3  # ...and this many p99 latencies (fast 503s can make the median small)...
MAX_WINDOW_S = 30.0  # ...up to this
SECTIONS = ("systems", "noop", "open-inference", "fraud-history", "reasons", "efficientnet")


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 8, 32, 64, 128])
    parser.add_argument(
        "--peer-levels", nargs="+", type=int, default=[1, 64], help="concurrency for peers"
    )
    parser.add_argument("--window-s", type=float, default=5.0)
    parser.add_argument("--max-windows", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", choices=SECTIONS, help="run one section, not all")
    parser.add_argument(
        "--open-inference-levels",
        nargs="+",
        type=int,
        default=[1, 64],
        help="concurrency of the open-inference section",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the sections measured side by side"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="seconds, not minutes: checks the harness end to end, says nothing about speed",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.systems = [
            s for s in args.systems if s in ("deepserve", "fastapi-noop", "fastapi-noop-lean")
        ]
        args.levels, args.peer_levels = [1, 8], [1, 8]
        args.open_inference_levels = [1, 8]
        args.window_s, args.max_windows = 2.0, 1
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk (Debian/Ubuntu: apt-get install wrk)")

    sections = [args.only] if args.only else list(SECTIONS)

    images, image_source = sample_images()
    transactions, transaction_source = sample_transactions()
    settings = Settings(_env_file=None)
    if "efficientnet" in sections:
        efficientnet.check_model(settings)  # before any section, not after twenty minutes
    limit_seconds = 0.1 if args.quick else 1.0  # per batch size, in each of 3 rounds
    bodies = 10 if args.quick else 50
    at_start: dict[str, inprocess.Limit] = {}
    at_end: dict[str, inprocess.Limit] = {}
    rows: list[dict] = []
    starts: dict[str, dict] = {}
    beside_noops: dict | None = None
    v2: dict | None = None
    history: dict | None = None
    explained: dict | None = None
    large_image: dict | None = None
    bodies_dir = Path(tempfile.mkdtemp(prefix="deepserve-bench-"))
    try:
        if "systems" in sections:
            print("in-process ONNX Runtime limits, at the start", flush=True)
            at_start = _limits(settings, images, transactions, limit_seconds)
            rows, starts = _systems(args, images, transactions, bodies_dir, bodies)
        if "noop" in sections:
            print("one transaction a request beside the FastAPI no-ops, side by side", flush=True)
            beside_noops = noop_rounds.measure(
                transactions,
                bodies_dir / "noop",
                1 if args.quick else args.rounds,
                2.0 if args.quick else 5.0,
                bodies,
            )
        if "open-inference" in sections:
            print("open inference protocol (v2) beside /v1", flush=True)
            v2 = open_inference.measure(
                settings,
                images,
                transactions,
                bodies_dir / "open-inference",
                args.workloads,
                args.open_inference_levels,
                open_inference.Timing.of(args.rounds, STABLE_WITHIN, args.quick),
                bodies,
            )
        if "fraud-history" in sections:
            print("fraud history: stateful beside stateless scoring", flush=True)
            many = transactions if args.quick else sample_transactions(40_000)[0]
            history = fraud_history.measure(
                many,
                bodies_dir / "fraud-history",
                1 if args.quick else args.rounds,
                2.0 if args.quick else 6.0,
                20 if args.quick else 400,
                load_history=not args.quick,
            )
        if "reasons" in sections:
            print("reasons: the fraud model's reasons graph beside scoring alone", flush=True)
            explained = reasons.measure(
                settings,
                transactions,
                bodies_dir / "reasons",
                1 if args.quick else args.rounds,
                2.0 if args.quick else 5.0,
                0.1 if args.quick else 1.0,
                # Enough real transactions that the model flags some (about 1 in 100).
                20 if args.quick else 1000,
            )
        if "efficientnet" in sections:
            print("efficientnet: the 224x224 network in process and served", flush=True)
            large_image = efficientnet.measure(
                settings,
                images,
                bodies_dir / "efficientnet",
                1 if args.quick else args.rounds,
                5.0 if args.quick else 10.0,  # at c=64 a batch of 32 takes a second or two
                0.1 if args.quick else 2.0,
                10 if args.quick else 100,
            )
    finally:
        shutil.rmtree(bodies_dir, ignore_errors=True)
    if "systems" in sections:
        print("in-process ONNX Runtime limits, at the end", flush=True)
        at_end = _limits(settings, images, transactions, limit_seconds)
    limits = {model: inprocess.combined(at_start[model], at_end[model]) for model in at_start}

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "quick": args.quick,
        "sections": sections,
        "machine": describe_machine(),
        "settings": {
            "window_s": args.window_s,
            "latencies_per_window": LATENCIES_PER_WINDOW,
            "slowest_per_window": SLOWEST_PER_WINDOW,
            "max_window_s": MAX_WINDOW_S,
            "max_windows": args.max_windows,
            "stable_within": STABLE_WITHIN,
            "levels": args.levels,
            "peer_levels": args.peer_levels,
            "service": "python -m app, default settings, DEEPSERVE_LOG_LEVEL=warning",
        },
        "data": {"images": image_source, "transactions": transaction_source},
        "limits": {
            model: {
                **asdict(limit),
                "best_batch": limit.best_batch,
                "best_items_per_s": limit.best_items_per_s,
            }
            for model, limit in limits.items()
        },
        "limits_at_start": {model: asdict(limit) for model, limit in at_start.items()},
        "limits_at_end": {model: asdict(limit) for model, limit in at_end.items()},
        "systems": starts,
        "results": rows,
    }
    if beside_noops is not None:
        results["noop_rounds"] = beside_noops
    if v2 is not None:
        results["open_inference"] = v2
    if history is not None:
        results["fraud_history"] = history
    if explained is not None:
        results["reasons"] = explained
    if large_image is not None:
        results["efficientnet"] = large_image
    results["targets"] = report.targets(results)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{time.strftime('%Y%m%d-%H%M%S')}-{platform.node() or 'host'}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(report.markdown(results))
    plots = report.plots(results, stem)
    print(report.markdown(results))
    print(f"wrote {stem}.json, .md" + "".join(f", {p.name}" for p in plots))
    return stem.with_suffix(".json")


def _systems(
    args: argparse.Namespace,
    images: list[bytes],
    transactions: list[dict],
    bodies_dir: Path,
    bodies: int,
) -> tuple[list[dict], dict[str, dict]]:
    """The systems table: its rows, and each system's start-up time and memory."""
    rows: list[dict] = []
    starts: dict[str, dict] = {}
    for name in args.systems:
        system = SYSTEMS[name]
        workloads = [w for w in system.workloads if w in args.workloads]
        if not workloads:
            continue
        requests = {
            w: build(WORKLOADS[w], system.style, images, transactions, bodies_dir, bodies)
            for w in workloads
        }
        first = requests[workloads[0]]
        probe = (first.path, first.content_type, first.bodies[0].read_bytes())
        probe_headers = first.headers[0] if first.headers else {}
        port = free_port()
        print(f"{name}: starting", flush=True)
        running = start(system, port, timeout_s=300, probe=probe, probe_headers=probe_headers)
        starts[name] = {
            "start_to_ready_s": round(running.start_to_ready_s, 2),
            "rss_mb_idle": round(settled_rss(running), 1),
        }
        try:
            peer = name in PEERS
            levels = args.peer_levels if peer else args.levels
            if name == "deepserve-unbatched":
                levels = [64] if not args.quick else [8]
            for workload in workloads:
                # Warm-up: first-call allocations, caches, JIT paths, connection pools.
                requests[workload].run(running.base, 8, 1.0 if args.quick else 3.0)
                for concurrency in levels:
                    row = _measure_level(
                        running,
                        workload,
                        requests[workload],
                        concurrency,
                        args.window_s,
                        args.max_windows,
                    )
                    rows.append(row)
                    print(
                        f"  {workload:9s} c={concurrency:<3d} {row['rps']:8.1f} req/s "
                        f"p50 {row['p50_ms']:7.2f} p99 {row['p99_ms']:7.2f} ms "
                        f"errors {row['errors']} server {row['server_cpu']:.2f} cores "
                        f"wrk {row['generator_cpu']:.2f} cores"
                        + ("" if row["stable"] else " (unstable)"),
                        flush=True,
                    )
            if name == "triton":
                rows += _triton_by_perf_analyzer(
                    running, workloads, levels, images, transactions, bodies_dir, bodies
                )
            starts[name]["rss_mb_peak"] = max(r["rss_mb_peak"] for r in rows if r["system"] == name)
        finally:
            stop_process(running.process)
    return rows, starts


def _triton_by_perf_analyzer(
    running: Running,
    workloads: list[str],
    levels: list[int],
    images: list[bytes],
    transactions: list[dict],
    folder: Path,
    bodies: int,
) -> list[dict]:
    """Triton driven by its own load generator: perf_analyzer over Triton's v2 HTTP API with
    binary tensors, one item a request (so image-1 and fraud-1 only), the same items as the
    wrk rows. perf_analyzer decides stability itself (`bench/perf_analyzer.py`)."""
    try:
        generator = perf_analyzer.install()
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"triton: no perf_analyzer rows ({exc})", flush=True)
        return []
    settings = Settings(_env_file=None)
    timing = open_inference.Timing.of(1, STABLE_WITHIN, quick=False)
    pid = running.process.pid
    rows = []
    for workload in (w for w in workloads if WORKLOADS[w].items == 1):
        spec = WORKLOADS[workload]
        served = (
            settings.default_image_model if spec.model == "image" else settings.default_fraud_model
        )
        card = read_card(stateless_version(settings.model_repository, served))
        data = perf_analyzer.write_input_data(
            v2_inputs(spec, images, transactions, card, bodies),
            folder / f"triton-perf-analyzer-{workload}.json",
        )
        triton_model = "cifar10" if spec.model == "image" else "fraud"  # as the peer binds them
        for concurrency in levels:
            cpu_before, started = cpu_seconds(pid), time.monotonic()
            try:
                measured = perf_analyzer.run(
                    generator,
                    triton_model,
                    1,
                    f"127.0.0.1:{running.port}",
                    "http",
                    data,
                    concurrency,
                    timing.interval_ms,
                    timing.stable_within,
                    timing.max_trials,
                )
            except RuntimeError as exc:  # one failed row, not the end of an hour's run
                print(f"  {workload} c={concurrency}: perf_analyzer failed: {exc}", flush=True)
                continue
            server_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
            row = {
                "system": report.TRITON_BY_PERF_ANALYZER,
                "generator": "perf_analyzer",
                "workload": workload,
                "concurrency": concurrency,
                "rps": round(measured.rps, 1),
                "items_per_s": round(measured.rps, 1),
                "offered_rps": round(measured.rps, 1),
                "p50_ms": round(measured.p50_ms, 2),
                "p90_ms": round(measured.p90_ms, 2),
                "p99_ms": round(measured.p99_ms, 2),
                "errors": 0,  # perf_analyzer stops at the first failed request
                "server_cpu": round(server_cpu, 2),
                "generator_cpu": round(measured.generator_cpu, 2),
                "rss_mb_peak": round(rss_mb(pid), 1),
                "windows": 3,
                "stable": measured.stable,
            }
            rows.append(row)
            print(
                f"  {workload:9s} c={concurrency:<3d} {row['rps']:8.1f} req/s "
                f"p50 {row['p50_ms']:7.2f} p99 {row['p99_ms']:7.2f} ms (perf_analyzer, "
                f"{row['generator_cpu']:.2f} cores)",
                flush=True,
            )
    return rows


def _limits(
    settings: Settings, images: list[bytes], transactions: list[dict], seconds_each: float
) -> dict[str, inprocess.Limit]:
    limits = {
        "image": inprocess.measure(
            settings.default_image_model,
            settings,
            images,
            transactions,
            [1, 4, 8, 16, 32, 64],
            seconds_each,
        ),
        "fraud": inprocess.measure(
            settings.default_fraud_model,
            settings,
            images,
            transactions,
            [1, 16, 64, 256, 1024, 4096],
            seconds_each,
        ),
    }
    for model, limit in limits.items():
        print(
            f"  {model}: best {limit.best_items_per_s:,.0f} items/s at batch "
            f"{limit.best_batch}; one item {limit.single_p50_ms:.2f} ms",
            flush=True,
        )
    return limits


def _measure_level(
    running: Running,
    workload: str,
    requests: Requests,
    concurrency: int,
    window_s: float,
    max_windows: int,
) -> dict:
    pid = running.process.pid
    windows = []
    stable = False
    empty = 0
    seconds = window_s
    while len(windows) < max_windows:
        cpu_before = cpu_seconds(pid)
        started = time.monotonic()
        window = requests.run(running.base, concurrency, seconds)
        server_cpu = (cpu_seconds(pid) - cpu_before) / (time.monotonic() - started)
        if window.requests == 0 and empty < 5:
            # Nothing finished within the window (slow requests): it says nothing, so it
            # does not count; try again with a longer one, a few times at most.
            empty += 1
            seconds = min(MAX_WINDOW_S, seconds * 2)
            continue
        # A window must see each connection complete many requests, or its count is mostly
        # the luck of which requests straddle its edges: grow it with the latency.
        seconds = min(
            MAX_WINDOW_S,
            max(
                seconds,
                LATENCIES_PER_WINDOW * window.p50_ms / 1000,
                SLOWEST_PER_WINDOW * window.p99_ms / 1000,
            ),
        )
        windows.append((window, server_cpu, rss_mb(pid)))
        if len(windows) >= 3:
            recent = [_served_rps(w) for w, _, _ in windows[-3:]]
            mean = sum(recent) / 3
            if mean > 0 and all(abs(r - mean) <= STABLE_WITHIN * mean for r in recent):
                stable = True
                break
    # wrk drops its connections at the end of a window, leaving their requests in the server:
    # give them the time the slowest took before the next level starts.
    if math.isfinite(windows[-1][0].p99_ms):
        time.sleep(min(MAX_WINDOW_S, windows[-1][0].p99_ms / 1000))
    counted = windows[-3:]
    window, server_cpu, _ = sorted(counted, key=lambda x: _served_rps(x[0]))[len(counted) // 2]
    items = WORKLOADS[workload].items
    return {
        "system": running.system.name,
        "generator": "wrk",
        "workload": workload,
        "concurrency": concurrency,
        # Answers other than 2xx (503s when the queue is full) are not throughput.
        "rps": round(_served_rps(window), 1),
        "items_per_s": round(_served_rps(window) * items, 1),
        "offered_rps": round(window.rps, 1),
        "p50_ms": round(window.p50_ms, 2),
        "p90_ms": round(window.p90_ms, 2),
        "p99_ms": round(window.p99_ms, 2),
        "errors": sum(w.errors for w, _, _ in counted),
        "server_cpu": round(server_cpu, 2),
        "generator_cpu": round(window.generator_cpu, 2),
        "rss_mb_peak": round(max(r for _, _, r in windows), 1),
        "windows": len(windows),
        "stable": stable,
    }


def _served_rps(window: Window) -> float:
    """Requests per second answered with success (wrk's rate counts every answer)."""
    return window.rps * (1 - window.errors / max(window.requests, 1))


def describe_machine() -> dict:
    def version(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True)
            return (out.stdout + out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "unknown"

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "wrk": version(["wrk", "--version"]),
        "perf_analyzer": perf_analyzer.VERSION,
        "commit": _commit(),
    }


def _commit() -> str:
    """The code measured: its commit, with `-dirty` for uncommitted changes."""
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
