"""`python -m training evaluate`: the fraud benchmark's protocol, ours beside the baselines.

Four prequential folds; on each, our MLP and two scikit-learn baselines (logistic regression
and gradient-boosted trees) train on the same week and are scored on the same test week.
The published reference results are printed beside ours.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from training.fraud import FraudConfig, fit, predict_scores
from training.fraud_data import feature_matrix, load_transactions, split_window
from training.fraud_metrics import fraud_metrics
from training.run_dirs import new_run_dir

FOLD_STARTS = ["2018-07-25", "2018-08-01", "2018-08-08", "2018-08-15"]
METRICS = ("auc_roc", "average_precision", "card_precision_top_100")

# The benchmark's published results (test folds, mean ± std), for the table.
PUBLISHED = {
    "decision tree (tuned)": ((0.797, 0.01), (0.579, 0.01), (0.284, 0.00)),
    "logistic regression": ((0.868, 0.02), (0.623, 0.02), (0.297, 0.01)),
    "random forest": ((0.870, 0.02), (0.678, 0.01), (0.299, 0.01)),
    "XGBoost (tuned)": ((0.869, 0.01), (0.687, 0.01), (0.303, 0.01)),
    "feed-forward network": ((0.876, 0.01), (0.675, 0.01), (0.303, 0.02)),
    "LSTM": ((0.876, 0.02), (0.665, 0.02), (0.297, 0.01)),
}

Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray, FraudConfig], np.ndarray]


@dataclass
class FraudEvaluationConfig(FraudConfig):
    folds: list[str] = field(default_factory=lambda: list(FOLD_STARTS))
    baselines: bool = True


def _mlp(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    return predict_scores(fit(cfg, x, y).model, x_test)


def _logistic(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(x, y).predict_proba(x_test)[:, 1]


def _boosted(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    model = HistGradientBoostingClassifier(random_state=cfg.seed)
    return model.fit(x, y).predict_proba(x_test)[:, 1]


def evaluate_fraud(cfg: FraudEvaluationConfig) -> dict[str, dict[str, list[float]]]:
    """Run every model on every fold; print and save the table and a plot."""
    run_dir = new_run_dir(cfg.runs_dir, "fraud-evaluation")
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    scorers: dict[str, Scorer] = {"ours: MLP": _mlp}
    if cfg.baselines:
        scorers |= {
            "ours: logistic regression": _logistic,
            "ours: gradient-boosted trees": _boosted,
        }

    frame = load_transactions(cfg.data)
    results: dict[str, dict[str, list[float]]] = {
        name: {m: [] for m in METRICS} for name in scorers
    }
    for start in tqdm(cfg.folds, desc="folds"):
        window = split_window(frame, start, cfg.train_days, cfg.delay_days, cfg.test_days)
        x, y = feature_matrix(window.train), window.train["TX_FRAUD"].to_numpy(np.float32)
        x_test = feature_matrix(window.test)
        for name, scorer in scorers.items():
            scores = scorer(x, y, x_test, cfg)
            for metric, value in fraud_metrics(window.test, scores).items():
                results[name][metric].append(value)

    table = format_table(results)
    print(table)
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "results.md").write_text(table + "\n")
    _plot(results, run_dir / "metrics.png")
    print(f"written to {run_dir}")
    return results


def format_table(results: dict[str, dict[str, list[float]]]) -> str:
    lines = ["| model | AUC ROC | AP | CP@100 |", "| --- | --- | --- | --- |"]
    for name, values in results.items():
        cells = [f"{np.mean(values[m]):.3f} ± {np.std(values[m]):.3f}" for m in METRICS]
        lines.append(f"| **{name}** | " + " | ".join(cells) + " |")
    for name, published in PUBLISHED.items():
        cells = [f"{mean:.3f} ± {std:.2f}" for mean, std in published]
        lines.append(f"| published: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(results) + [f"published: {n}" for n in PUBLISHED]
    for ax, (index, metric) in zip(axes, enumerate(METRICS), strict=True):
        means = [np.mean(results[n][metric]) for n in results]
        stds = [np.std(results[n][metric]) for n in results]
        means += [published[index][0] for published in PUBLISHED.values()]
        stds += [published[index][1] for published in PUBLISHED.values()]
        colours = ["tab:blue"] * len(results) + ["tab:gray"] * len(PUBLISHED)
        ax.barh(names, means, xerr=stds, color=colours)
        ax.set(title=metric, xlim=(min(means) * 0.9, max(means) * 1.03))
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
