"""`make soak`: sustained mixed load on the committed models; does the server's memory grow?

Starts `python -m app` on `models/`, warms it up, then keeps images, single transactions,
batches of transactions and malformed requests flowing for the soak period while sampling
the server's resident memory. Passes when RSS at the end is within 5% of RSS after warm-up
and no request went unanswered or failed with a 5xx. Writes JSON and a PNG plot to
`bench/results/`.

    python -m tests.soak [--minutes 10] [--warmup-s 60] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections import Counter
from pathlib import Path

from tests.load import Results, post_request, rss_mb, run_load
from tests.server import running_server

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
RESULTS = ROOT / "bench" / "results"
MAX_GROWTH = 0.05


def requests(port: int) -> dict[str, tuple[bytes, int]]:
    """Name -> (raw request, concurrency): the mix kept flowing during the soak."""
    host = "127.0.0.1"
    return {
        "classify 1 image": (
            post_request(host, port, "/v1/classify", (DATA / "cat.jpg").read_bytes(), "image/jpeg"),
            4,
        ),
        "score 1 transaction": (
            post_request(
                host,
                port,
                "/v1/fraud/score",
                (DATA / "transaction.json").read_bytes(),
                "application/json",
            ),
            4,
        ),
        "score 100 transactions": (
            post_request(
                host,
                port,
                "/v1/fraud/score",
                _hundred_transactions(),
                "application/json",
            ),
            2,
        ),
        "malformed image": (
            post_request(host, port, "/v1/classify", b"\xff\xd8 not a jpeg", "image/jpeg"),
            1,
        ),
    }


def _hundred_transactions() -> bytes:
    batch = json.loads((DATA / "transactions.json").read_text())["transactions"]
    return json.dumps({"transactions": (batch * 100)[:100]}).encode()


async def soak(
    port: int, pid: int, seconds: float, sample_s: float, rate: float
) -> tuple[dict, list]:
    mix = requests(port)
    samples: list[tuple[float, float]] = []
    started = time.monotonic()

    async def sample() -> None:
        while time.monotonic() - started < seconds:
            samples.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(sample_s)
        samples.append((time.monotonic() - started, rss_mb(pid)))

    loads = [
        run_load(
            "127.0.0.1",
            port,
            raw,
            concurrency=concurrency,
            duration_s=seconds,
            rate=rate * concurrency if rate else None,
        )
        for raw, concurrency in mix.values()
    ]
    *results, _ = await asyncio.gather(*loads, sample())
    by_name: dict[str, Results] = dict(zip(mix, results, strict=True))
    summary = {
        name: {
            "requests": len(r.outcomes),
            "per_s": round(r.rate(), 1),
            "statuses": {str(k): v for k, v in Counter(o.status for o in r.outcomes).items()},
        }
        for name, r in by_name.items()
    }
    return summary, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=60.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="requests/s per client (0: each client sends as soon as it has its answer)",
    )
    args = parser.parse_args()

    with running_server(model_repository=str(ROOT / "models"), log_level="warning") as server:
        pid = server.process.pid
        asyncio.run(soak(server.port, pid, args.warmup_s, args.sample_s, args.rate))
        summary, samples = asyncio.run(
            soak(server.port, pid, args.minutes * 60, args.sample_s, args.rate)
        )

    start_mb, end_mb = samples[0][1], samples[-1][1]
    growth = (end_mb - start_mb) / start_mb
    unanswered = sum(s["statuses"].get("None", 0) for s in summary.values())
    server_errors = sum(
        count
        for s in summary.values()
        for code, count in s["statuses"].items()
        if code.isdigit() and int(code) >= 500
    )
    passed = growth < MAX_GROWTH and unanswered == 0 and server_errors == 0
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "kind": "soak",
        "date": stamp,
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "minutes": args.minutes,
        "warmup_s": args.warmup_s,
        "rate_per_client": args.rate or "closed loop",
        "rss_mb_after_warmup": round(start_mb, 1),
        "rss_mb_at_end": round(end_mb, 1),
        "rss_mb_peak": round(max(mb for _, mb in samples), 1),
        "rss_growth": round(growth, 4),
        "max_growth": MAX_GROWTH,
        "unanswered": unanswered,
        "server_errors": server_errors,
        "passed": passed,
        "load": summary,
        "rss_samples": [(round(t, 1), round(mb, 1)) for t, mb in samples],
    }
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    _plot(samples, RESULTS / f"soak-{stamp}.png", growth)
    print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=2))
    print(f"wrote {path}")
    sys.exit(0 if passed else 1)


def _plot(samples: list[tuple[float, float]], path: Path, growth: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t / 60 for t, _ in samples], [mb for _, mb in samples], marker=".")
    ax.axhline(samples[0][1] * (1 + MAX_GROWTH), color="red", linestyle="--", label="+5%")
    ax.set(
        xlabel="minutes of load",
        ylabel="server RSS (MB)",
        title=f"soak: RSS growth {growth:+.1%} after warm-up",
    )
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
