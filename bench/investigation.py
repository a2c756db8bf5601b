"""`make investigate`: a simulated investigation team works the alert queue of the served
fraud model, day by day, over the four folds' test weeks (the 28 days from 2018-08-08 to
2018-09-04).

    python -m bench.investigation [--start 2018-08-08] [--days 28] [--team 100]
                                  [--reissue-after DAYS] [--store embedded|redis]
                                  [--cards N] [--out DIR]

One `python -m app` on `models/` (its default fraud model), with the 37 days before the
start loaded into its history (`HistoryStore.load`; labels only for payments a week older
than the start, as they would be known). Then the days are replayed in time order through
HTTP, 100 payments a request to `POST /v1/fraud/transactions?include=features`, with
every payment's label sent a week late to `POST /v1/fraud/labels` (as `make replay` does).
At the end of each day the team takes the `--team` highest-scored open alerts from
`GET /v1/fraud/alerts` and resolves each with the truth, through the API as analysts
would: `fraud` when any of the alert's payments was fraud (the card is then frozen), else
`genuine`. It then checks that the cards it confirmed show those labels at once
(`GET /v1/fraud/customers/{id}`). With `--reissue-after N`, the team also unfreezes each
card it froze N days before (`POST /v1/fraud/customers/{id}/unfreeze`), as if the holder
had a new card by then; by default a freeze stays.

Per day: cards investigated, fraudulent cards caught (beside the offline CP@100 count of
the same model on the same day: the fraudulent cards among its 100 highest-scored, by the
benchmark's protocol), fraud amount stopped by freezes (declined with `card_frozen`)
against all fraud amount, genuine payments declined on frozen cards, and genuine cards
frozen. Also the served features against the offline ones, as in `make replay`: the
team's labels arrive early, and must not change them. Writes
`<out>/investigation-<date>.{json,md,png}`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pandas as pd
from tqdm import tqdm

from app.fraud.features import ALL_FEATURES, FEATURE_NAMES
from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.records import event_time_us
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore, LoadRow
from app.serving.repository import discover, read_card
from bench.replay import DATA, LABEL_DELAY, ROOT, Replay, _post, body, feature_mismatches
from tests.redis_server import redis_server
from tests.server import running_server
from training.fraud_data import COLUMNS, add_features, load_transactions, split_window
from training.fraud_evaluate import FOLD_STARTS
from training.fraud_metrics import fraudulent_cards_in_top_k
from training.plots import investigation_days

BATCH = 100
HISTORY_DAYS = 37
DAY = pd.Timedelta(days=1)


@dataclass
class Day:
    """What one day of the simulation did and saw."""

    day: str
    payments: int = 0
    fraud_payments: int = 0
    fraud_amount: float = 0.0
    stopped_amount: float = 0.0  # fraud declined because the card was frozen
    declined_fraud_amount: float = 0.0  # fraud the model itself declined
    genuine_declined_frozen: int = 0  # genuine payments declined on frozen cards
    alerts_open_before: int = 0  # the queue when the team sat down
    investigated: int = 0
    caught: int = 0  # alerts resolved as fraud: cards confirmed and frozen
    genuine_frozen: int = 0  # cards frozen by an alert the team resolved as genuine
    offline_top_100: int | None = None  # fraudulent cards in the model's top 100 offline
    label_mismatches: int = 0  # confirmed frauds whose labels the history did not show


@dataclass
class Simulation:
    days: list[Day] = field(default_factory=list)
    served: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    retried: list[int] = field(default_factory=lambda: [0])


def frame_for(start: pd.Timestamp, days: int, cards: int | None) -> pd.DataFrame:
    """The dataset's payments from `HISTORY_DAYS` before the start to its end, with the
    offline features (on the first `cards` cards only, for a short slice)."""
    frame = load_transactions(str(DATA))
    if cards is not None:
        kept = np.sort(frame["CUSTOMER_ID"].unique())[:cards]
        frame = add_features(frame.loc[frame["CUSTOMER_ID"].isin(kept), COLUMNS])
    when = frame["TX_DATETIME"]
    first = start - HISTORY_DAYS * DAY
    return frame[(when >= first) & (when < start + days * DAY)].reset_index(drop=True)


def load_history(store: HistoryStore, earlier: pd.DataFrame, start: pd.Timestamp) -> int:
    """The payments before the start into the store, each with its label where it would be
    known at the start (a week old)."""
    known = earlier["TX_DATETIME"] < start - LABEL_DELAY
    rows: list[LoadRow] = [
        (
            str(int(r.TRANSACTION_ID)),
            str(int(r.CUSTOMER_ID)),
            str(int(r.TERMINAL_ID)),
            float(r.TX_AMOUNT),
            event_time_us(r.TX_DATETIME.to_pydatetime()),
            int(r.TX_FRAUD) if k else None,
        )
        for r, k in zip(earlier.itertuples(), known, strict=True)
    ]

    async def load() -> int:
        await store.open()
        try:
            return sum([await store.load(rows[i : i + 2000]) for i in range(0, len(rows), 2000)])
        finally:
            await store.close()

    return asyncio.run(load())


def simulate(
    base: str,
    frame: pd.DataFrame,
    start: pd.Timestamp,
    team: int,
    reissue_after: int = 0,
    progress: bool = True,
) -> Simulation:
    """Replay the days from `start` with labels a week late and the team at each day's end."""
    sim = Simulation()
    times = frame["TX_DATETIME"].to_numpy()
    truth = dict(zip(frame["TRANSACTION_ID"], frame["TX_FRAUD"], strict=True))
    labelled = int(np.searchsorted(times, np.datetime64(start - LABEL_DELAY), side="left"))
    replayed = frame[frame["TX_DATETIME"] >= start]
    frozen_on: dict[Any, int] = {}  # card: the day the team froze it
    started = time.perf_counter()
    with httpx.Client(base_url=base, timeout=60) as client:
        days = list(replayed.groupby(replayed["TX_DATETIME"].dt.normalize(), sort=True))
        for n, (day, payments) in enumerate(
            tqdm(days, desc="days", unit="day", disable=not progress)
        ):
            today = Day(str(day.date()))
            if reissue_after:
                _reissue(client, frozen_on, n - reissue_after)
            for first in range(0, len(payments), BATCH):
                rows = payments.iloc[first : first + BATCH]
                due = rows["TX_DATETIME"].iloc[-1] - LABEL_DELAY
                end = int(np.searchsorted(times, np.datetime64(due), side="right"))
                if end > labelled:
                    labels = [
                        {"transaction_id": int(i), "fraud": bool(truth[i])}
                        for i in frame["TRANSACTION_ID"].iloc[labelled:end]
                    ]
                    _post(client, "/v1/fraud/labels", {"labels": labels}, sim.retried)
                    labelled = end
                path = "/v1/fraud/transactions?include=features"
                answers = _post(client, path, body(rows), sim.retried).json()["results"]
                _count(today, rows, answers)
                sim.served += answers
            for card in _investigate(client, today, team, truth):
                frozen_on[card] = n
            sim.days.append(today)
    sim.seconds = time.perf_counter() - started
    return sim


def _count(today: Day, rows: pd.DataFrame, answers: list[dict[str, Any]]) -> None:
    for fraud, amount, answer in zip(rows["TX_FRAUD"], rows["TX_AMOUNT"], answers, strict=True):
        today.payments += 1
        frozen = bool(answer.get("reasons")) and answer["reasons"][0]["code"] == "card_frozen"
        if fraud:
            today.fraud_payments += 1
            today.fraud_amount += amount
            if frozen:
                today.stopped_amount += amount
            elif answer["decision"] == "decline":
                today.declined_fraud_amount += amount
        elif frozen:
            today.genuine_declined_frozen += 1


def _reissue(client: httpx.Client, frozen_on: dict[Any, int], up_to_day: int) -> None:
    """Unfreeze the cards the team froze on `up_to_day` or before."""
    for card in [c for c, day in frozen_on.items() if day <= up_to_day]:
        lifted = client.post(f"/v1/fraud/customers/{card}/unfreeze")
        if lifted.status_code != 200:
            raise RuntimeError(f"unfreeze {card}: {lifted.status_code} {lifted.text}")
        del frozen_on[card]


def _investigate(client: httpx.Client, today: Day, team: int, truth: dict[int, int]) -> list[Any]:
    """The team's day: the `team` highest-scored open alerts, each resolved with the truth;
    then the confirmed cards' labels looked up in the history. The cards it froze."""
    queue = client.get("/v1/fraud/alerts", params={"limit": team})
    queue.raise_for_status()
    alerts = queue.json()["alerts"]
    opened = client.get("/metrics").text
    today.alerts_open_before = int(_metric(opened, "deepserve_fraud_alerts_open"))
    confirmed: dict[Any, list[Any]] = {}
    genuine: set[int] = set()
    for summary in alerts:
        alert = client.get(f"/v1/fraud/alerts/{summary['id']}").json()
        ids = [t["transaction_id"] for t in alert["transactions"]]
        fraud = any(truth[i] for i in ids)
        outcome = "fraud" if fraud else "genuine"
        resolved = client.post(
            f"/v1/fraud/alerts/{summary['id']}/resolve",
            json={"outcome": outcome, "note": "simulated investigation"},
        )
        if resolved.status_code != 200:
            raise RuntimeError(f"resolve {summary['id']}: {resolved.status_code} {resolved.text}")
        today.investigated += 1
        if fraud:
            today.caught += 1
            confirmed[alert["customer_id"]] = ids
        else:
            genuine.add(summary["id"])
    # The service must freeze only what the team found fraud.
    frozen = client.get("/v1/fraud/frozen", params={"limit": 10_000}).json()["frozen"]
    today.genuine_frozen = sum(f["alert_id"] in genuine for f in frozen)
    for card, ids in confirmed.items():
        view = client.get(f"/v1/fraud/customers/{card}", params={"limit": 1000}).json()
        labels = {t["transaction_id"]: t["fraud"] for t in view["transactions"]}
        today.label_mismatches += sum(labels.get(i) is not True for i in ids)
    return list(confirmed)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise KeyError(name)


def offline_top_100(frame: pd.DataFrame, start: pd.Timestamp, days: int) -> dict[str, int]:
    """Per test day of the folds within the period: the fraudulent cards among the served
    model's 100 highest-scored, run offline on the offline features, by the benchmark's
    protocol (the fold's known-compromised cards left out)."""
    versions = discover(ROOT / "models")["fraud"]
    newest = max(versions, key=lambda v: v.version)
    card = read_card(newest)
    assert card.tabular is not None
    session = ort.InferenceSession(str(newest.onnx_path), providers=["CPUExecutionProvider"])
    everything = load_transactions(str(DATA))
    counts: dict[str, int] = {}
    for fold in FOLD_STARTS:
        test = split_window(everything, fold).test
        first = test["TX_DATETIME"].min().normalize()
        if first < start or first >= start + days * DAY:
            continue
        rows = test[list(card.tabular.features)].to_numpy(np.float32)
        (scores,) = session.run([card.outputs[0].name], {card.input.name: rows})
        caught = fraudulent_cards_in_top_k(test, scores.reshape(len(test), -1)[:, -1], 100)
        counts |= {str(day.date()): n for day, n in caught.items()}
    return counts


def weeks(days: list[Day]) -> list[dict[str, Any]]:
    """The days summed per week from the start: each a fold's test week."""
    summary = []
    for first in range(0, len(days), 7):
        week = days[first : first + 7]
        offline = [d.offline_top_100 for d in week if d.offline_top_100 is not None]
        summary.append(
            {
                "from": week[0].day,
                "to": week[-1].day,
                "investigated": sum(d.investigated for d in week),
                "caught": sum(d.caught for d in week),
                "caught_per_day": sum(d.caught for d in week) / len(week),
                "offline_top_100_per_day": (
                    sum(offline) / len(offline) if len(offline) == len(week) else None
                ),
                "fraud_amount": sum(d.fraud_amount for d in week),
                "stopped_amount": sum(d.stopped_amount for d in week),
                "declined_fraud_amount": sum(d.declined_fraud_amount for d in week),
                "genuine_declined_frozen": sum(d.genuine_declined_frozen for d in week),
                "genuine_frozen": sum(d.genuine_frozen for d in week),
                "label_mismatches": sum(d.label_mismatches for d in week),
            }
        )
    return summary


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench.investigation", description=__doc__)
    parser.add_argument("--start", default="2018-08-08")
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--team", type=int, default=100, help="alerts resolved a day")
    parser.add_argument(
        "--reissue-after", type=int, default=0, help="unfreeze after N days (0: never)"
    )
    parser.add_argument("--store", choices=("embedded", "redis"), default="embedded")
    parser.add_argument("--cards", type=int, default=None, help="only the first N cards")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)

    start = pd.Timestamp(args.start)
    frame = frame_for(start, args.days, args.cards)
    earlier = frame[frame["TX_DATETIME"] < start]
    print(
        f"{len(earlier):,} payments loaded before {args.start}; "
        f"{len(frame) - len(earlier):,} replayed over {args.days} days"
    )
    with tempfile.TemporaryDirectory(prefix="investigation-") as folder:
        state = Path(folder) / "state"
        if args.store == "embedded":
            load_history(EmbeddedHistory(state / "fraud-history.db"), earlier, start)
            with running_server(log_level="warning", grpc_port="0", state_dir=str(state)) as base:
                sim = simulate(base, frame, start, args.team, args.reissue_after)
        else:
            with redis_server() as redis:
                load_history(RedisHistory(redis.url), earlier, start)
                with running_server(
                    log_level="warning", grpc_port="0", fraud_store=redis.url
                ) as base:
                    sim = simulate(base, frame, start, args.team, args.reissue_after)

    offline = offline_top_100(frame, start, args.days) if args.cards is None else {}
    for day in sim.days:
        day.offline_top_100 = offline.get(day.day)
    replayed = frame[frame["TX_DATETIME"] >= start].reset_index(drop=True)
    served = pd.DataFrame(sim.served)
    features = pd.DataFrame(list(served["features"]))
    checked = Replay(
        replayed,
        pd.concat([served, features], axis=1).rename(
            columns={name: column for column, name in FEATURE_NAMES.items()}
        ),
        sim.seconds,
    )
    report = {
        "period": [args.start, args.days],
        "store": args.store,
        "team_per_day": args.team,
        "reissue_after_days": args.reissue_after,
        "cards": args.cards,
        "payments_replayed": len(replayed),
        "seconds": sim.seconds,
        "requests_retried_after_503": sim.retried[0],
        "feature_mismatches": feature_mismatches(checked, start),
        "weeks": weeks(sim.days),
        "days": [vars(d) for d in sim.days],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"investigation-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    investigation_days([vars(d) for d in sim.days], stem.with_suffix(".png"))
    stem.with_suffix(".md").write_text(markdown(report, stem.with_suffix(".png").name))
    print(markdown(report, stem.with_suffix(".png").name))
    return stem


def markdown(report: dict[str, Any], plot: str) -> str:
    mismatches = report["feature_mismatches"]
    wrong = sum(v for k, v in mismatches.items() if k != "checked")
    lines = [
        f"# Simulated investigation from {report['period'][0]}, {report['period'][1]} days",
        "",
        f"{report['payments_replayed']:,} payments through HTTP ({report['store']} store), "
        f"labels a week late; a team resolving the {report['team_per_day']} highest-scored "
        "open alerts at the end of each day with the true label"
        + (
            f", and unfreezing each card {report['reissue_after_days']} days after freezing it"
            if report["reissue_after_days"]
            else ", freezes kept"
        )
        + " (`python -m bench.investigation`).",
        "",
        "| test week | cards investigated | fraudulent cards caught (a day) | offline CP@100 "
        "count (a day) | fraud amount stopped by freezes | declined by the model | all fraud "
        "amount | genuine payments declined on frozen cards | genuine cards frozen |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for w in report["weeks"]:
        offline = w["offline_top_100_per_day"]
        lines.append(
            f"| {w['from']} to {w['to']} | {w['investigated']} | {w['caught']} "
            f"({w['caught_per_day']:.1f}) | "
            + ("n/a" if offline is None else f"{offline:.1f}")
            + f" | {w['stopped_amount']:,.0f} ({_share(w['stopped_amount'], w['fraud_amount'])})"
            f" | {w['declined_fraud_amount']:,.0f} "
            f"({_share(w['declined_fraud_amount'], w['fraud_amount'])}) | "
            f"{w['fraud_amount']:,.0f} | {w['genuine_declined_frozen']} | {w['genuine_frozen']} |"
        )
    lines += [
        "",
        f"![per day]({plot})",
        "",
        f"- confirmed frauds whose labels the card's history did not show at once: "
        f"{sum(w['label_mismatches'] for w in report['weeks'])}",
        f"- served features different from the offline ones: {wrong} of "
        f"{mismatches['checked']:,} payments x {len(ALL_FEATURES)} (the team's early labels "
        "change none)",
        f"- {report['payments_replayed'] / report['seconds']:,.0f} payments/s through the "
        f"replay, team included; requests retried after a 503: "
        f"{report['requests_retried_after_503']}",
    ]
    return "\n".join(lines) + "\n"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


if __name__ == "__main__":
    main()
