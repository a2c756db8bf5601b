"""`python -m training reasons-check`: do the reasons name what drives the score?

A deletion test on the published model, through ONNX Runtime as the service runs it: take
flagged test transactions (score at or above the review threshold, from the benchmark's
test weeks), set the features their reasons name to the baseline, and see how far the mean
probability falls; then the same with as many features chosen at random. Reasons that mean
something lower it much more.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from app.model_card import ModelCard
from training import plots
from training.fraud_data import feature_matrix, load_transactions, split_window
from training.fraud_evaluate import FOLD_STARTS
from training.run_dirs import new_run_dir

CURVE_UP_TO = 6  # features set to the baseline, for the plot


@dataclass
class ReasonsCheckConfig:
    data: str = "../shared/datasets/fraud-transactions.csv.gz"
    model: str = "models/fraud"  # a version's folder, or a model's (its newest version)
    runs_dir: str = "runs"
    flagged: int = 1000  # transactions, sampled from the flagged ones of the test weeks
    folds: list[str] = field(default_factory=lambda: list(FOLD_STARTS))  # whose test weeks
    top: int = 3  # reasons given per transaction
    seed: int = 0


def check_reasons(cfg: ReasonsCheckConfig) -> dict:
    """The deletion test's figures, written with a plot to a new run directory."""
    folder = _version_folder(Path(cfg.model))
    card = ModelCard.model_validate_json((folder / "model.json").read_text())
    if card.reasons is None or card.thresholds is None or card.tabular is None:
        raise SystemExit(f"{folder}: the model has no reasons graph")
    run_dir = new_run_dir(cfg.runs_dir, "reasons-check")
    frame = load_transactions(cfg.data)
    columns = tuple(card.tabular.features)  # in the card's order, as the service sends them
    rows = np.concatenate(
        [feature_matrix(split_window(frame, start).test, columns) for start in cfg.folds]
    )
    result = deletion_test(folder, card, rows, cfg.flagged, cfg.top, cfg.seed)
    result |= {"model": f"{card.name}/{card.version}", "config": asdict(cfg)}
    (run_dir / "reasons_check.json").write_text(json.dumps(result, indent=2))
    plots.deletion_curves(result["curve"], card.name, run_dir / "deletion.png")
    print(json.dumps({k: v for k, v in result.items() if k not in ("curve", "config")}))
    print(f"wrote {run_dir}")
    return result


def deletion_test(
    folder: Path, card: ModelCard, rows: np.ndarray, flagged: int, top: int, seed: int
) -> dict:
    """Mean probability of `flagged` flagged rows, and its fall when their top reasons'
    features, or as many random ones, are set to the baseline."""
    assert card.reasons is not None and card.thresholds is not None
    model = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    reasons = ort.InferenceSession(
        str(folder / card.reasons.file), providers=["CPUExecutionProvider"]
    )
    input_name = card.input.name

    def probability(x: np.ndarray) -> np.ndarray:
        return model.run(None, {input_name: x})[0][:, -1]

    scores = probability(rows)
    candidates = np.flatnonzero(scores >= card.thresholds.review)
    if len(candidates) == 0:
        raise SystemExit(f"no test transaction is flagged (review at {card.thresholds.review})")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=min(flagged, len(candidates)), replace=False)
    x = rows[chosen]
    attributions = reasons.run([card.reasons.output], {input_name: x})[0]
    baseline = np.asarray(card.reasons.baseline, dtype=np.float32)
    by_reason = np.argsort(-attributions, axis=1, kind="stable")  # largest first
    at_random = np.argsort(rng.random(x.shape), axis=1)

    def fall(order: np.ndarray, k: int) -> float:
        deleted = x.copy()
        picked = order[:, :k]
        np.put_along_axis(deleted, picked, baseline[picked], axis=1)
        return float(np.mean(scores[chosen] - probability(deleted)))

    curve = [
        {"features": k, "by_reasons": fall(by_reason, k), "at_random": fall(at_random, k)}
        for k in range(1, CURVE_UP_TO + 1)
    ]
    top_fall, random_fall = fall(by_reason, top), fall(at_random, top)
    return {
        "flagged_available": len(candidates),
        "transactions": len(chosen),
        "mean_probability": float(np.mean(scores[chosen])),
        "fall_top_reasons": top_fall,
        "fall_random_features": random_fall,
        "ratio": top_fall / random_fall if random_fall > 0 else float("inf"),
        "curve": curve,
    }


def _version_folder(path: Path) -> Path:
    if (path / "model.json").is_file():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise SystemExit(f"{path}: no model version here")
    return max(versions, key=lambda p: int(p.name))
