"""`python -m training fraud`: train the fraud-scoring MLP on one benchmark window and export it.

Reads top to bottom: config -> data -> model -> loop -> evaluate -> thresholds -> save.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from app.fraud_features import FEATURES
from training import plots
from training.export import publish
from training.fraud_data import feature_matrix, load_transactions, split_window
from training.fraud_metrics import fraud_metrics
from training.provenance import current_provenance
from training.schedules import ScheduleName, lr_multiplier


@dataclass
class FraudConfig:
    data: str = "../shared/datasets/fraud-transactions.csv.gz"
    name: str = "fraud"
    models_dir: str = "models"
    runs_dir: str = "runs"
    train_start: str = "2018-07-25"
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    dropout: float = 0.2
    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: ScheduleName = "cosine"
    warmup_fraction: float = 0.1
    pos_weight: float = 1.0  # >1 weighs the rare fraud class up in the loss
    val_fraction: float = 0.2  # stratified hold-out of the training window
    early_stopping_patience: int = 5
    review_alert_rate: float = 0.01  # share of validation transactions sent to review
    decline_precision: float = 0.9
    seed: int = 0
    device: str = "cpu"
    export: bool = True


class FraudMLP(nn.Module):
    """Standardized features -> hidden layers -> one fraud logit."""

    def __init__(self, n_features: int, hidden: list[int], dropout: float) -> None:
        super().__init__()
        self.constructor_args = {"n_features": n_features, "hidden": hidden, "dropout": dropout}
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)


class ServingFraudModel(nn.Module):
    """Raw float32 `[n, 15]` features -> fraud probability `[n, 1]`, scaling in the graph."""

    def __init__(self, mlp: FraudMLP, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.mlp = mlp
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("std", torch.from_numpy(std.astype(np.float32)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.mlp((features - self.mean) / self.std)).unsqueeze(1)


def train_fraud(cfg: FraudConfig) -> Path | None:
    """Train the fraud MLP on one window and export it with decision thresholds."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    run_dir = Path(cfg.runs_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # Data
    frame = load_transactions(cfg.data)
    window = split_window(frame, cfg.train_start, cfg.train_days, cfg.delay_days, cfg.test_days)
    x_all, y_all = feature_matrix(window.train), window.train["TX_FRAUD"].to_numpy(np.float32)
    train_idx, val_idx = _stratified_split(y_all, cfg.val_fraction, rng)
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_val, y_val = x_all[val_idx], y_all[val_idx]
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6  # scaling fitted on training data only
    print(
        f"window from {cfg.train_start}: {len(x_train)} train ({int(y_train.sum())} frauds), "
        f"{len(x_val)} validation ({int(y_val.sum())}), {len(window.test)} test "
        f"({int(window.test['TX_FRAUD'].sum())})"
    )

    # Model
    mlp = FraudMLP(len(FEATURES), cfg.hidden, cfg.dropout)
    model = ServingFraudModel(mlp, mean, std)
    optimizer = torch.optim.AdamW(mlp.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    steps_per_epoch = -(-len(xt) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    pos_weight = torch.tensor(cfg.pos_weight)
    history: list[dict] = []
    best_auc, best_state, stale = -1.0, None, 0

    # Loop
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(xt))
        loss_sum = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            lr = cfg.lr * lr_multiplier(cfg.schedule, step, total_steps, cfg.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            logits = mlp((xt[batch] - model.mean) / model.std)
            loss = F.binary_cross_entropy_with_logits(logits, yt[batch], pos_weight=pos_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(batch)
            bar.set_postfix(loss=f"{loss_sum / ((i + 1) * cfg.batch_size):.4f}", lr=f"{lr:.2e}")
        val_scores = _predict(model, x_val)
        val_auc = float(roc_auc_score(y_val, val_scores))
        val_loss = float(
            F.binary_cross_entropy(
                torch.from_numpy(val_scores).clamp(1e-7, 1 - 1e-7), torch.from_numpy(y_val)
            )
        )
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / len(xt),
            "val_loss": val_loss,
            "val_auc": val_auc,
            "lr": lr,
        }
        history.append(record)
        print(json.dumps(record))
        if val_auc > best_auc:
            best_auc, stale = val_auc, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                print(f"early stop: validation AUC has not improved for {stale} epochs")
                break
    assert best_state is not None
    model.load_state_dict(best_state)

    # Evaluate
    test_scores = _predict(model, feature_matrix(window.test))
    metrics: dict[str, float | str] = {
        f"test_{k}": v for k, v in fraud_metrics(window.test, test_scores).items()
    }
    metrics["validation_auc_roc"] = best_auc
    metrics["window"] = (
        f"train {cfg.train_start} +{cfg.train_days}d, delay {cfg.delay_days}d, "
        f"test {cfg.test_days}d"
    )
    print(json.dumps(metrics))

    # Thresholds
    val_scores = _predict(model, x_val)
    review, decline = choose_thresholds(
        val_scores, y_val, cfg.review_alert_rate, cfg.decline_precision
    )
    rule = (
        f"review: the top {cfg.review_alert_rate:.1%} of validation transactions by score; "
        f"decline: the lowest score at which validation precision is at least "
        f"{cfg.decline_precision:.0%}"
    )
    (run_dir / "metrics.json").write_text(
        json.dumps({"history": history, "test": metrics, "thresholds": [review, decline]}, indent=2)
    )
    plots.training_curves(history, run_dir / "curves.png")
    plots.roc_and_pr(window.test["TX_FRAUD"].to_numpy(), test_scores, run_dir / "roc_pr.png")
    if not cfg.export:
        return None

    # Save
    card = {
        "kind": "tabular_classifier",
        "description": f"Fraud-scoring MLP {[len(FEATURES), *cfg.hidden, 1]} over the "
        "benchmark's 15 transaction features",
        "inputs": [{"name": "features", "dtype": "float32", "shape": [None, len(FEATURES)]}],
        "outputs": [{"name": "fraud_probability", "dtype": "float32", "shape": [None, 1]}],
        "output_transform": "none",
        "labels": ["genuine", "fraud"],
        "tabular": {"features": list(FEATURES), "scaling_in_graph": True},
        "thresholds": {"review": review, "decline": decline, "rule": rule},
        "batching": {"max_batch_size": 256, "max_queue_delay_ms": 0.0},
        "metrics": metrics,
        "provenance": current_provenance(cfg.data, cfg.seed).model_dump(),
    }
    examples = feature_matrix(window.test.sample(n=64, random_state=cfg.seed))
    target = publish(model, examples, card, Path(cfg.models_dir), cfg.name)
    print(f"exported {target}")
    return target


def choose_thresholds(
    scores: np.ndarray, labels: np.ndarray, review_rate: float, decline_precision: float
) -> tuple[float, float]:
    """(review, decline) by the rule recorded in the model card."""
    review = float(np.quantile(scores, 1.0 - review_rate))
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(labels[order]) / np.arange(1, len(order) + 1)
    meets = np.nonzero(precision >= decline_precision)[0]
    # The deepest cut-off that still meets the precision target; 1.0 when none does.
    decline = float(scores[order][meets[-1]]) if len(meets) else 1.0
    decline = max(decline, review)
    return review, decline


@torch.no_grad()
def _predict(model: ServingFraudModel, x: np.ndarray) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(x)).squeeze(1).numpy()


def _stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    train, val = [], []
    for value in (0, 1):
        idx = rng.permutation(np.nonzero(labels == value)[0])
        cut = round(len(idx) * fraction)
        val.append(idx[:cut])
        train.append(idx[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
