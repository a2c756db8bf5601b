"""`python -m training evaluate`: the fraud benchmark's protocol, ours beside the baselines.

Four prequential folds; on each, our MLP and two scikit-learn baselines (logistic regression
and gradient-boosted trees) train on the same week and are scored on the same test week,
once per feature set (the benchmark's 15, and those with what the history adds). The
published reference results, all on the 15, are printed beside ours, and so are the bounds
of `training.fraud_bounds` where the data names each fraud's pattern.
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

from app.fraud.features import FEATURE_SETS
from training.fraud import FraudConfig, fit, predict_scores
from training.fraud_bounds import (
    BOUNDS,
    auc_by_announcement,
    bound_scores,
    read_scenarios,
    unannounced,
)
from training.fraud_data import feature_matrix, load_transactions, split_window
from training.fraud_metrics import fraud_metrics
from training.run_dirs import new_run_dir

FOLD_STARTS = ["2018-07-25", "2018-08-01", "2018-08-08", "2018-08-15"]
METRICS = ("auc_roc", "average_precision", "card_precision_top_100")
OURS = "ours: "  # how our models' rows begin; the bounds' rows do not

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
    # The benchmark's set beside the widest (`--feature-sets` names any of `FEATURE_SETS`).
    feature_sets: list[str] = field(default_factory=lambda: ["benchmark-15", "history-20"])
    baselines: bool = True


def _mlp(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    return predict_scores(fit(cfg, x, y).model, x_test)


def _with_set(cfg: FraudEvaluationConfig, feature_set: str) -> FraudConfig:
    fields = {f: v for f, v in asdict(cfg).items() if f in FraudConfig.__dataclass_fields__}
    return FraudConfig(**(fields | {"feature_set": feature_set}))


def _logistic(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return model.fit(x, y).predict_proba(x_test)[:, 1]


def _boosted(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, cfg: FraudConfig) -> np.ndarray:
    model = HistGradientBoostingClassifier(random_state=cfg.seed)
    return model.fit(x, y).predict_proba(x_test)[:, 1]


def evaluate_fraud(cfg: FraudEvaluationConfig) -> dict[str, dict[str, list[float]]]:
    """Run every model on every fold with every feature set; print and save the tables
    (means, and each fold's) and a plot."""
    unknown = set(cfg.feature_sets) - set(FEATURE_SETS)
    if unknown:
        raise SystemExit(f"evaluate: no feature set {', '.join(sorted(unknown))}")
    run_dir = new_run_dir(cfg.runs_dir, "fraud-evaluation")
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    scorers: dict[str, Scorer] = {"MLP": _mlp}
    if cfg.baselines:
        scorers |= {"logistic regression": _logistic, "gradient-boosted trees": _boosted}

    frame = load_transactions(cfg.data)
    scenarios = read_scenarios(cfg.data)
    results: dict[str, dict[str, list[float]]] = {
        f"{OURS}{name}, {feature_set}": {m: [] for m in METRICS}
        for name in scorers
        for feature_set in cfg.feature_sets
    }
    if scenarios is not None:
        results |= {label: {m: [] for m in METRICS} for label in BOUNDS.values()}
    unannounced_shares = []
    by_announcement: dict[str, dict[str, list[float]]] = {
        name: {"knowable": [], "unannounced": []} for name in results if name.startswith(OURS)
    }
    for start in tqdm(cfg.folds, desc="folds"):
        window = split_window(frame, start, cfg.train_days, cfg.delay_days, cfg.test_days)
        hidden = unannounced(window.test, frame, scenarios) if scenarios is not None else None
        if hidden is not None:
            for bound, scores in bound_scores(window.test, hidden, cfg.seed).items():
                for metric, value in fraud_metrics(window.test, scores).items():
                    results[BOUNDS[bound]][metric].append(value)
            unannounced_shares.append(hidden.sum() / window.test["TX_FRAUD"].sum())
        y = window.train["TX_FRAUD"].to_numpy(np.float32)
        for feature_set in cfg.feature_sets:
            columns = FEATURE_SETS[feature_set]
            x = feature_matrix(window.train, columns)
            x_test = feature_matrix(window.test, columns)
            for name, scorer in scorers.items():
                scores = scorer(x, y, x_test, _with_set(cfg, feature_set))
                label = f"{OURS}{name}, {feature_set}"
                for metric, value in fraud_metrics(window.test, scores).items():
                    results[label][metric].append(value)
                if hidden is not None:
                    split = auc_by_announcement(window.test, hidden, scores)
                    for part, value in split.items():
                        by_announcement[label][part].append(value)

    table = format_table(results) + "\n\n" + format_folds(results, cfg.folds)
    if unannounced_shares:
        shares = ", ".join(f"{share:.1%}" for share in unannounced_shares)
        table += (
            f"\n\nUnannounced frauds, by fold: {shares} of the test weeks' frauds.\n\n"
            + format_by_announcement(by_announcement, cfg.folds)
        )
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
        shown = f"**{name}**" if name.startswith(OURS) else name
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    for name, published in PUBLISHED.items():
        cells = [f"{mean:.3f} ± {std:.2f}" for mean, std in published]
        lines.append(f"| published: {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_folds(results: dict[str, dict[str, list[float]]], folds: list[str]) -> str:
    """Each fold's figures: whether a difference holds on every fold, not only on average."""
    header = " | ".join(f"fold {start}" for start in folds)
    lines = [f"| model | metric | {header} |", "| --- | --- |" + " --- |" * len(folds)]
    for name, values in results.items():
        for metric in METRICS:
            cells = " | ".join(f"{v:.3f}" for v in values[metric])
            lines.append(f"| {name} | {metric} | {cells} |")
    return "\n".join(lines)


def format_by_announcement(split: dict[str, dict[str, list[float]]], folds: list[str]) -> str:
    """Each model's AUC ROC per fold on the knowable frauds and on the unannounced ones."""
    header = " | ".join(f"fold {start}" for start in folds)
    lines = [
        f"| AUC ROC against the genuine payments | frauds | {header} |",
        "| --- | --- |" + " --- |" * len(folds),
    ]
    for name, parts in split.items():
        for part, values in parts.items():
            lines.append(f"| {name} | {part} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, dict[str, list[float]]], path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    names = list(results) + [f"published: {n}" for n in PUBLISHED]
    for ax, (index, metric) in zip(axes, enumerate(METRICS), strict=True):
        means = [np.mean(results[n][metric]) for n in results]
        stds = [np.std(results[n][metric]) for n in results]
        means += [published[index][0] for published in PUBLISHED.values()]
        stds += [published[index][1] for published in PUBLISHED.values()]
        colours = ["tab:blue" if n.startswith(OURS) else "tab:green" for n in results]
        colours += ["tab:gray"] * len(PUBLISHED)
        ax.barh(names, means, xerr=stds, color=colours)
        ax.set(title=metric, xlim=(min(means) * 0.9, max(means) * 1.03))
        ax.invert_yaxis()
    for ax in axes[1:]:
        ax.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
