"""Plots written next to a run's metrics: curves, schedules, confusion matrices, ROC and PR."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np


def training_curves(history: list[dict], path: Path) -> None:
    """Loss and accuracy per epoch (train and validation), and the learning rate per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("train_loss", "val_loss"):
        if key in history[0]:
            axes[0].plot(epochs, [h[key] for h in history], marker="o", label=key)
    axes[0].set(title="loss", xlabel="epoch")
    for key in ("train_accuracy", "val_accuracy", "val_auc", "val_ap"):
        if key in history[0]:
            axes[1].plot(epochs, [h[key] for h in history], marker="o", label=key)
    axes[1].set(title="accuracy / AUC / AP", xlabel="epoch")
    axes[2].plot(epochs, [h["lr"] for h in history], marker="o")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes[:2]:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def lr_schedule(lrs: Sequence[float], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(np.arange(len(lrs)), lrs)
    ax.set(title="learning-rate schedule", xlabel="step", ylabel="lr")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, classes: list[str], path: Path
) -> np.ndarray:
    k = len(classes)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.7 * k, 1 + 0.6 * k))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted", ylabel="true", title="confusion matrix (test)")
    for i in range(k):
        for j in range(k):
            colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=colour, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return matrix


def roc_and_pr(labels: np.ndarray, scores: np.ndarray, path: Path) -> None:
    from sklearn.metrics import (
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    fpr, tpr, _ = roc_curve(labels, scores)
    precision, recall, _ = precision_recall_curve(labels, scores)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(fpr, tpr, label=f"AUC {roc_auc_score(labels, scores):.3f}")
    axes[0].plot([0, 1], [0, 1], "k--", alpha=0.4)
    axes[0].set(title="ROC", xlabel="false positive rate", ylabel="true positive rate")
    axes[1].plot(recall, precision, label=f"AP {average_precision_score(labels, scores):.3f}")
    axes[1].set(title="precision-recall", xlabel="recall", ylabel="precision")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def bars(series: dict[str, dict[str, float]], title: str, path: Path) -> None:
    """Labelled bars for a handful of runs, one colour per series (say validation and test
    accuracy), side by side for each run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(next(iter(series.values())))
    width = 0.8 / len(series)
    for i, (label, values) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(names))]
        heights = [values[n] for n in names]
        ax.bar(xs, heights, width, label=label)
        for x, height in zip(xs, heights, strict=True):
            ax.text(x, height, f"{height:.3f}", ha="center", va="bottom", fontsize=8)
    low = min(min(values.values()) for values in series.values())
    ax.set_ylim(max(0.0, low - 0.1), 1.0)
    ax.set_xticks(range(len(names)), [n.replace("-", "\n", 1) for n in names])
    ax.set(title=title, ylabel="accuracy")
    if len(series) > 1:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def deletion_curves(curve: list[dict], model: str, path: Path) -> None:
    """Mean fall of the fraud probability as features are set to the baseline: those the
    reasons name first, against features chosen at random."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = [point["features"] for point in curve]
    ax.plot(ks, [p["by_reasons"] for p in curve], "o-", label="in the reasons' order")
    ax.plot(ks, [p["at_random"] for p in curve], "s--", label="at random")
    ax.set(
        title=f"{model}: deletion test on flagged transactions",
        xlabel="features set to the baseline",
        ylabel="mean fall of the fraud probability",
    )
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def investigation_days(days: list[dict], path: Path) -> None:
    """A simulated investigation team's days: cards caught against the offline top 100,
    fraud amount stopped, and the queue and the cost of freezes."""
    labels = [d["day"][5:] for d in days]
    x = np.arange(len(days))
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.5))
    ax = axes[0]
    ax.bar(x, [d["investigated"] for d in days], color="#c8d6e5", label="cards investigated")
    ax.bar(x, [d["caught"] for d in days], color="#2e86de", label="fraudulent cards caught")
    offline = [d["offline_top_100"] for d in days]
    if any(v is not None for v in offline):
        values = [np.nan if v is None else v for v in offline]
        ax.plot(x, values, "k.--", label="offline: fraudulent cards in the top 100")
    ax.set(title="cards a day", xlabel="day")
    ax = axes[1]
    ax.plot(x, [d["fraud_amount"] for d in days], "k-", label="all fraud")
    ax.plot(x, [d["stopped_amount"] for d in days], "g-o", ms=3, label="stopped by freezes")
    declined = [d["declined_fraud_amount"] for d in days]
    ax.plot(x, declined, "r-s", ms=3, label="declined by the model")
    ax.set(title="fraud amount a day", xlabel="day")
    ax = axes[2]
    ax.plot(x, [d["alerts_open_before"] for d in days], "b-", label="open alerts at day's end")
    frozen_cost = [d["genuine_declined_frozen"] for d in days]
    ax.plot(x, frozen_cost, "m-", label="genuine payments declined on frozen cards")
    ax.set(title="queue and cost", xlabel="day")
    for ax in axes:
        ax.set_xticks(x[::3], labels[::3], rotation=45)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
