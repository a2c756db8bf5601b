"""The stateful fraud routes beside stateless `/score`, side by side, for each store.

Two deepserve processes on the real fraud model: one with the embedded history (SQLite in
a fresh state directory), one with Redis (a redis-server started here, append-only file
fsynced every second, as `deploy/` runs it). Rows, each measured once per round, back to
back, the order reversed every other round:
- `/v1/fraud/score`, one transaction per request (its features sent): the denominator;
- `/v1/fraud/transactions`, one raw payment per request, on each store;
- `/v1/fraud/transactions`, 100 raw payments per request, on each store (transactions/s);
- where the served version reads features only the history computes, the same stateful
  route with the version `/score` serves (the benchmark's 15 features): what the wider
  model costs; and both versions in process (ONNX Runtime alone, rows/s at the served
  batch size), side by side.
Every payment is a new one: wrk gives each request ids no request carried before
(`bench/unique_ids.lua`). The payments are real ones of the dataset (cards, terminals,
amounts) moved into the three days after its last. Where the dataset is at hand, both
stores start with its last 37 days loaded (`app.fraud.history.bulk_load`), as a deployment
would: the bench's payments join real card and terminal histories, and the embedded
server's RSS is that of a full retention.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.fraud.history.bulk_load import main as bulk_load
from app.serving.repository import discover
from bench.inprocess import stateless_version
from bench.procs import cpu_seconds, free_port, rss_mb
from bench.systems import SYSTEMS, Running, settled_rss, start, stop_process
from bench.workloads import FRAUD, ROOT, WORKLOADS, Requests, build
from bench.wrk import Window, run_window
from tests.redis_server import RedisServer, redis_installed

UNIQUE_IDS = Path(__file__).with_name("unique_ids.lua")
LEVEL = 64
# 100 payments a request: enough in flight that the event loop and the model work at once
BATCH_LEVEL = 16


@dataclass(frozen=True)
class Row:
    name: str
    server: str  # "embedded" or "redis"
    path: str
    items: int  # per request
    concurrency: int
    query: str = ""  # e.g. "?version=5"


ROWS = (
    Row("/v1/fraud/score (stateless)", "embedded", "/v1/fraud/score", 1, LEVEL),
    Row("/v1/fraud/transactions, embedded", "embedded", "/v1/fraud/transactions", 1, LEVEL),
    Row("/v1/fraud/transactions, Redis", "redis", "/v1/fraud/transactions", 1, LEVEL),
    Row("100 per request, embedded", "embedded", "/v1/fraud/transactions", 100, BATCH_LEVEL),
    Row("100 per request, Redis", "redis", "/v1/fraud/transactions", 100, BATCH_LEVEL),
)


def measure(
    transactions: list[dict],
    folder: Path,
    rounds: int,
    window_s: float,
    bodies: int = 400,
    load_history: bool = True,
) -> dict:
    """Rows of the section with each round's figures. Many bodies (each one payment or a
    hundred, from as many dataset rows): repeating a few cards would make their windows
    longer than any real card's."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = list(ROWS)
    versions = discover(ROOT / "models", ["fraud"])["fraud"]
    fifteen = stateless_version(ROOT / "models", "fraud")
    if fifteen.version != versions[-1].version:
        name = f"/v1/fraud/transactions, embedded, fraud/{fifteen.version}"
        path, query = "/v1/fraud/transactions", f"?version={fifteen.version}"
        rows.insert(2, Row(name, "embedded", path, 1, LEVEL, query))
    compared = [fifteen.version, versions[-1].version] if len(rows) > len(ROWS) else []
    requests = {(row.path, row.items): _requests(row, transactions, folder, bodies) for row in rows}
    servers: dict[str, Running] = {}
    redis: RedisServer | None = None
    if not redis_installed():
        print("fraud history: no redis-server, no Redis rows", flush=True)
        rows = [r for r in rows if r.server != "redis"]
    state = Path(tempfile.mkdtemp(prefix="deepserve-bench-state-"))
    next_id = 10**12
    samples: dict[Row, list[dict]] = {row: [] for row in rows}
    try:
        if any(r.server == "redis" for r in rows):
            redis = RedisServer(state / "redis")
            (state / "redis").mkdir()
            redis.start()
        loaded = {
            server: _load_history(server, state, redis) if load_history else 0
            for server in {r.server for r in rows}
        }
        for server in {r.server for r in rows}:
            env = {"DEEPSERVE_STATE_DIR": str(state / server)}
            if server == "redis":
                assert redis is not None
                env["DEEPSERVE_FRAUD_STORE"] = redis.url
            system = replace(SYSTEMS["deepserve"], name=f"deepserve-{server}", env=env)
            servers[server] = start(system, free_port(), timeout_s=300)
        idle_rss = {server: settled_rss(running) for server, running in servers.items()}
        for row in rows:  # warm-up
            _window(
                servers[row.server], requests[(row.path, row.items)], 8, 2.0, next_id, row.query
            )
            next_id += 10**10
        for round_ in range(rounds):
            for row in rows if round_ % 2 == 0 else rows[::-1]:
                running = servers[row.server]
                pid = running.process.pid
                cpu_before, started = cpu_seconds(pid), time.monotonic()
                window = _window(
                    running,
                    requests[(row.path, row.items)],
                    row.concurrency,
                    window_s,
                    next_id,
                    row.query,
                )
                next_id += 10**10
                served = window.rps * (1 - window.errors / max(window.requests, 1))
                samples[row].append(
                    {
                        "rps": served,
                        "items_per_s": served * row.items,
                        "p50_ms": window.p50_ms,
                        "p99_ms": window.p99_ms,
                        "errors": window.errors,
                        "server_cpu": (cpu_seconds(pid) - cpu_before)
                        / (time.monotonic() - started),
                        "rss_mb": rss_mb(pid),
                    }
                )
                print(
                    f"  {row.name:36s} c={row.concurrency:<3d} {served:8.1f} req/s "
                    f"({served * row.items:8.0f} tx/s) p99 {window.p99_ms:7.2f} ms",
                    flush=True,
                )
    finally:
        for running in servers.values():
            stop_process(running.process)
        if redis is not None:
            redis.stop()
        shutil.rmtree(state, ignore_errors=True)
    return {
        "settings": {
            "rounds": rounds,
            "window_s": window_s,
            "order": "every row once per round, back to back; reversed every other round",
            "redis": "redis-server from the distribution, appendonly yes, appendfsync everysec",
            "payments": "real dataset rows (card, terminal, amount) moved into the 3 days after "
            "its last, each body sent again 8 hours after its previous send; "
            "every request's ids new",
            "history_loaded": loaded,
        },
        "rss_mb_idle": {server: round(mb, 1) for server, mb in idle_rss.items()},
        "rows": [_summary(row, samples[row]) for row in rows],
        "in_process_rows_per_s": (
            in_process(compared, rounds, window_s / 2) if compared and FRAUD.exists() else {}
        ),
    }


def in_process(versions: list[int], rounds: int, seconds_each: float) -> dict[str, float]:
    """Rows/s of each fraud version in ONNX Runtime, in the service's session settings, at
    its card's largest batch, on real test-week rows; rounds interleaved, the median kept."""
    import numpy as np

    from app.serving.providers import choose_providers
    from app.serving.repository import read_card
    from app.serving.runtime import ModelRuntime
    from app.settings import Settings
    from training.fraud_data import feature_matrix, load_transactions

    config = Settings(_env_file=None).registry_config()
    frame = load_transactions(str(FRAUD))
    by_number = {v.version: v for v in discover(ROOT / "models", ["fraud"])["fraud"]}
    runtimes, rows = {}, {}
    for number in versions:
        card = read_card(by_number[number])
        assert card.tabular is not None
        runtimes[number] = ModelRuntime.load(
            card, by_number[number].onnx_path, config.runtime, choose_providers(config.device)
        )
        sample = frame.iloc[-card.batching.max_batch_size :]
        rows[number] = feature_matrix(sample, tuple(card.tabular.features))
        runtimes[number].warm_up()
    samples: dict[int, list[float]] = {number: [] for number in versions}
    for round_ in range(rounds):
        for number in versions if round_ % 2 == 0 else versions[::-1]:
            count, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds_each:
                runtimes[number].run_batch(rows[number])
                count += 1
            samples[number].append(count * len(rows[number]) / (time.perf_counter() - started))
    return {f"fraud/{n}": round(float(np.median(s)), 1) for n, s in samples.items()}


def _load_history(server: str, state: Path, redis: RedisServer | None) -> int:
    """The dataset's last 37 days into the server's store; how many payments (0 without
    the dataset)."""
    if not FRAUD.exists():
        return 0
    target = ["--state-dir", str(state / server)]
    if server == "redis":
        assert redis is not None
        target = ["--store", redis.url]
    print(f"fraud history: loading the dataset's last 37 days ({server})", flush=True)
    return bulk_load(["--csv", str(FRAUD), *target])


def _requests(row: Row, transactions: list[dict], folder: Path, bodies: int) -> Requests:
    if row.path == "/v1/fraud/score":
        workload = WORKLOADS["fraud-1" if row.items == 1 else "fraud-100"]
        return build(workload, "deepserve", [], transactions, folder, bodies)
    # The days right after the dataset's (and the loaded history's) last: payments arrive
    # after those recorded, as they do in service. wrk moves each send of a body on by
    # hours (`bench/unique_ids.lua`): a body sent again is its card paying again later.
    start_at = datetime(2018, 10, 1, tzinfo=UTC)
    paths = []
    # One payment a body: five times the bodies, so that as many cards pay as in the
    # batched rows, and no card's windows grow past what the dataset's do.
    for index in range(bodies if row.items > 1 else bodies * 5):
        chosen = [
            transactions[(index * row.items + k) % len(transactions)] for k in range(row.items)
        ]
        moments = [
            start_at + timedelta(seconds=(t["transaction_id"] * 7919) % 259_200) for t in chosen
        ]
        payments = [
            {
                "transaction_id": "__ID__",
                "customer_id": t["customer_id"],
                "terminal_id": t["terminal_id"],
                "amount": t["amount"],
                "timestamp": f"__AT:{int(moment.timestamp())}__",
            }
            for t, moment in zip(chosen, moments, strict=True)
        ]
        document: object = payments[0] if row.items == 1 else {"transactions": payments}
        path = folder / f"payments-{row.items}-{index}.body"
        path.write_text(json.dumps(document))
        paths.append(path)
    return Requests(row.path, "application/json", paths)


def _window(
    running: Running,
    requests: Requests,
    concurrency: int,
    seconds: float,
    first_id: int,
    query: str = "",
) -> Window:
    url = running.base + requests.path + query
    if not requests.path.endswith("/transactions"):  # stateless: any body may repeat
        return run_window(url, requests.content_type, requests.bodies, concurrency, seconds)
    return run_window(
        url,
        requests.content_type,
        requests.bodies,
        concurrency,
        seconds,
        script=UNIQUE_IDS,
        script_args=(str(first_id),),
    )


def _summary(row: Row, samples: list[dict]) -> dict:
    """The median round stands for the row; every round's figure is kept for ratios."""
    middle = sorted(samples, key=lambda s: s["rps"])[len(samples) // 2]
    return {
        "system": row.name,
        "store": row.server,
        "path": row.path + row.query,
        "items": row.items,
        "concurrency": row.concurrency,
        "rps": round(middle["rps"], 1),
        "items_per_s": round(middle["items_per_s"], 1),
        "p50_ms": round(middle["p50_ms"], 2),
        "p99_ms": round(middle["p99_ms"], 2),
        "errors": sum(s["errors"] for s in samples),
        "server_cpu": round(middle["server_cpu"], 2),
        "rss_mb_peak": round(max(s["rss_mb"] for s in samples), 1),
        "rps_rounds": [round(s["rps"], 1) for s in samples],
    }


def ratios(section: dict) -> dict[str, float]:
    """Stateful over stateless requests/s at concurrency 64, per store: the median of the
    rounds' ratios (each round's rows ran within the same minute)."""
    rows = {r["system"]: r for r in section["rows"]}
    base = rows.get(ROWS[0].name)
    out = {}
    for row in ROWS[1:3]:
        if base is None or row.name not in rows:
            continue
        paired = sorted(
            a / b for a, b in zip(rows[row.name]["rps_rounds"], base["rps_rounds"], strict=True)
        )
        out[row.server] = paired[len(paired) // 2]
    return out
