"""`make replay`: the dataset's raw transactions replayed in time order through HTTP into an
empty history, checked against `training/`'s offline features and evaluation.

    python -m bench.replay [--start 2018-06-01] [--end 2018-08-15] [--cards N]
                           [--store embedded|redis|both] [--out DIR]

One `python -m app` on `models/` with a fresh state directory (the embedded store), or with
an empty Redis (a `redis-server` started for it, append-only file on). Transactions go in batches
of 100 to `POST /v1/fraud/transactions?include=features`, one request at a time (parity
needs each transaction recorded before the next of its card is scored); before each batch,
the labels of every transaction a week older than the batch's last one go to
`POST /v1/fraud/labels`. Then:

- every feature of every transaction from the first with 37 days of history on must equal
  the offline value: counts exactly, the rest to 1e-9 relative;
- the 2018-07-25 fold's test week, scored by the service, must give the offline
  evaluation's metrics for the same model (its ONNX file run on the offline features);
- throughput: transactions/s through HTTP of the replay (one request at a time), and of
  the same transactions sent by 8 concurrent clients into another empty history.

Every check is made for each store replayed. Writes `<out>/replay-<date>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
from tqdm import tqdm

from app.fraud.features import ALL_FEATURES, FEATURE_NAMES, HISTORY_ONLY
from app.serving.repository import discover, read_card
from tests.redis_server import redis_server
from tests.server import running_server
from training.fraud_data import load_transactions, split_window
from training.fraud_metrics import fraud_metrics

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets" / "fraud-transactions.csv.gz"
BATCH = 100
LABEL_DELAY = pd.Timedelta(days=7)
HISTORY_NEEDED = pd.Timedelta(days=37)
FOLD_START = "2018-07-25"
# Counts, flags and the history's own (summed in one order online and offline) match to
# the last bit; the benchmark's averages and risks to rounding.
EXACT = {
    c for c in ALL_FEATURES if "_NB_TX_" in c or c in ("TX_DURING_WEEKEND", "TX_DURING_NIGHT")
} | HISTORY_ONLY


@dataclass
class Replay:
    frame: pd.DataFrame  # the replayed transactions, offline features included, in time order
    served: pd.DataFrame  # what the service answered, one row per transaction, same order
    seconds: float
    retried: int = 0  # requests answered 503 and sent again


def transactions(start: str, end: str, cards: int | None) -> pd.DataFrame:
    """The dataset's transactions in [start, end) with the offline features, computed on the
    whole file (or on the first `cards` cards' transactions, for a short slice)."""
    frame = load_transactions(str(DATA))
    if cards is not None:
        from training.fraud_data import COLUMNS, add_features

        kept = np.sort(frame["CUSTOMER_ID"].unique())[:cards]
        frame = add_features(frame.loc[frame["CUSTOMER_ID"].isin(kept), COLUMNS])
    when = frame["TX_DATETIME"]
    return frame[(when >= start) & (when < end)].reset_index(drop=True)


def body(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "transactions": [
            {
                "transaction_id": int(r.TRANSACTION_ID),
                "customer_id": int(r.CUSTOMER_ID),
                "terminal_id": int(r.TERMINAL_ID),
                "amount": float(r.TX_AMOUNT),
                "timestamp": r.TX_DATETIME.isoformat(),
            }
            for r in rows.itertuples()
        ]
    }


def replay(base: str, frame: pd.DataFrame, progress: bool = True) -> Replay:
    """Send the transactions in order, labels a week late; what the service answered."""
    answers: list[dict[str, Any]] = []
    retried = [0]
    labelled = 0
    times = frame["TX_DATETIME"]
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        batches = range(0, len(frame), BATCH)
        for start in tqdm(batches, desc="replay", unit="batch", disable=not progress):
            rows = frame.iloc[start : start + BATCH]
            due = rows["TX_DATETIME"].iloc[-1] - LABEL_DELAY
            end = int(np.searchsorted(times.to_numpy(), np.datetime64(due), side="right"))
            if end > labelled:
                labels = [
                    {"transaction_id": int(i), "fraud": bool(f)}
                    for i, f in zip(
                        frame["TRANSACTION_ID"].iloc[labelled:end],
                        frame["TX_FRAUD"].iloc[labelled:end],
                        strict=True,
                    )
                ]
                _post(client, "/v1/fraud/labels", {"labels": labels}, retried)
                labelled = end
            answer = _post(client, "/v1/fraud/transactions?include=features", body(rows), retried)
            answers += answer.json()["results"]
    seconds = time.perf_counter() - started
    served = pd.DataFrame(
        {
            "fraud_probability": [a["fraud_probability"] for a in answers],
            **{
                column: [a["features"][name] for a in answers]
                for column, name in FEATURE_NAMES.items()
            },
        }
    )
    return Replay(frame, served, seconds, retried[0])


RETRIES = 5


def _post(client: httpx.Client, path: str, document: Any, retried: list[int]) -> httpx.Response:
    """POST, and again after a 503 as a client should (the routes are idempotent): a store
    that answered too late, a full queue. Each retry is counted in the report."""
    for attempt in range(RETRIES + 1):
        answer = client.post(path, json=document)
        if answer.status_code != 503 or attempt == RETRIES:
            break
        retried[0] += 1
        time.sleep(float(answer.headers.get("retry-after", "1")))
    if answer.status_code != 200:
        raise RuntimeError(f"{path}: {answer.status_code} {answer.text}")
    return answer


def feature_mismatches(result: Replay, checked_from: pd.Timestamp | None = None) -> dict[str, int]:
    """Per feature, the transactions whose served value differs: those from `checked_from`,
    by default those with 37 days of replayed history."""
    frame, served = result.frame, result.served
    if checked_from is None:
        checked_from = frame["TX_DATETIME"].min() + HISTORY_NEEDED
    checked = (frame["TX_DATETIME"] >= checked_from).to_numpy()
    mismatches = {}
    for column in ALL_FEATURES:
        offline = frame[column].to_numpy(np.float64)[checked]
        online = served[column].to_numpy(np.float64)[checked]
        if column in EXACT:
            wrong = offline != online
        else:
            wrong = ~np.isclose(online, offline, rtol=1e-9, atol=1e-12)
        mismatches[column] = int(wrong.sum())
    mismatches["checked"] = int(checked.sum())
    return mismatches


def fold_metrics(result: Replay, everything: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The 2018-07-25 fold's test week: metrics of the served scores, and of the served
    model run offline on the offline features."""
    window = split_window(everything, FOLD_START)
    test = window.test
    by_id = pd.Series(
        result.served["fraud_probability"].to_numpy(), index=result.frame["TRANSACTION_ID"]
    )
    served_scores = by_id.loc[test["TRANSACTION_ID"]].to_numpy()
    versions = discover(ROOT / "models")["fraud"]
    newest = max(versions, key=lambda v: v.version)
    card = read_card(newest)
    assert card.tabular is not None
    session = ort.InferenceSession(str(newest.onnx_path), providers=["CPUExecutionProvider"])
    rows = test[list(card.tabular.features)].to_numpy(np.float32)
    (offline_scores,) = session.run([card.outputs[0].name], {card.input.name: rows})
    return {
        "served": fraud_metrics(test, served_scores),
        "offline": fraud_metrics(test, offline_scores.reshape(len(test), -1)[:, -1]),
        "test_transactions": {"count": float(len(test))},
        "model": {"version": float(card.version)},
    }


async def concurrent_throughput(
    base: str, frame: pd.DataFrame, clients: int = 8
) -> tuple[float, int]:
    """Transactions/s of the same batches from `clients` concurrent senders (no labels, no
    parity: a measure of throughput only), and how many requests were retried after a
    503."""
    bodies = [body(frame.iloc[s : s + BATCH]) for s in range(0, len(frame), BATCH)]
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)

    retried = 0

    async def sender(client: httpx.AsyncClient) -> None:
        nonlocal retried
        while not queue.empty():
            document = queue.get_nowait()
            for attempt in range(RETRIES + 1):
                answer = await client.post("/v1/fraud/transactions", json=document)
                if answer.status_code != 503 or attempt == RETRIES:
                    break
                retried += 1
                await asyncio.sleep(float(answer.headers.get("retry-after", "1")))
            if answer.status_code != 200:
                raise RuntimeError(f"{answer.status_code}: {answer.text}")

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        await asyncio.gather(*(sender(client) for _ in range(clients)))
    return len(frame) / (time.perf_counter() - started), retried


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__)
    parser.add_argument("--start", default="2018-06-01")
    parser.add_argument("--end", default="2018-08-15")
    parser.add_argument("--cards", type=int, default=None, help="only the first N cards")
    parser.add_argument("--store", choices=("embedded", "redis", "both"), default="both")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    frame = transactions(args.start, args.end, args.cards)
    print(f"{len(frame):,} transactions from {args.start} to {args.end}")
    everything = None
    stores = ["embedded", "redis"] if args.store == "both" else [args.store]
    report: dict[str, Any] = {
        "transactions": len(frame),
        "period": [args.start, args.end],
        "cards": args.cards,
        "stores": {},
    }
    for store in stores:
        print(f"{store} store", flush=True)
        with serving(store) as base:
            result = replay(base, frame)
        metrics = None
        if args.cards is None and args.start <= FOLD_START:
            everything = everything if everything is not None else load_transactions(str(DATA))
            metrics = fold_metrics(result, everything)
        with serving(store) as base:
            concurrent, concurrent_retried = asyncio.run(concurrent_throughput(base, frame))
        report["stores"][store] = {
            "one_request_at_a_time_tx_per_s": len(frame) / result.seconds,
            "eight_concurrent_tx_per_s": concurrent,
            "requests_retried_after_503": {
                "one_at_a_time": result.retried,
                "eight_concurrent": concurrent_retried,
            },
            "feature_mismatches": feature_mismatches(result),
            "fold_2018_07_25": metrics,
        }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"replay-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    stem.with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    return stem


@contextlib.contextmanager
def serving(store: str) -> Iterator[str]:
    """`python -m app` on `models/` with an empty history in `store`."""
    if store == "embedded":
        with running_server(log_level="warning", grpc_port="0") as base:
            yield base
        return
    with (
        redis_server() as redis,
        running_server(log_level="warning", grpc_port="0", fraud_store=redis.url) as base,
    ):
        yield base


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Replay {report['period'][0]} to {report['period'][1]}",
        "",
        f"{report['transactions']:,} transactions through HTTP in batches of {BATCH}, labels a "
        "week late, into an empty history (`python -m bench.replay`), per store.",
    ]
    for store, measured in report["stores"].items():
        mismatches = measured["feature_mismatches"]
        wrong = sum(v for k, v in mismatches.items() if k != "checked")
        lines += [
            "",
            f"## {store} store",
            "",
            f"- features checked: {mismatches['checked']:,} transactions x {len(ALL_FEATURES)} "
            f"features; values different from the offline ones: {wrong}",
            "- one request at a time: "
            f"{measured['one_request_at_a_time_tx_per_s']:,.0f} transactions/s",
            f"- 8 concurrent clients: {measured['eight_concurrent_tx_per_s']:,.0f} transactions/s",
            "- requests answered 503 and sent again (one at a time, 8 concurrent): "
            + ", ".join(str(n) for n in measured["requests_retried_after_503"].values()),
        ]
        metrics = measured["fold_2018_07_25"]
        if metrics:
            lines += [
                "",
                "| 2018-07-25 fold, test week | AUC ROC | AP | CP@100 |",
                "| --- | --- | --- | --- |",
            ]
            for name in ("served", "offline"):
                m = metrics[name]
                lines.append(
                    f"| {name} | {m['auc_roc']:.6f} | {m['average_precision']:.6f} | "
                    f"{m['card_precision_top_100']:.6f} |"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
