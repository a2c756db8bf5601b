"""`python -m training transfer-experiment`: is a pretrained backbone worth it on little data?

The reference experiment: pretrain on the CIFAR-10 classes other than cat and dog, then learn
cat vs dog from 500 training images per class three ways with the same budget (backbone
frozen, backbone fine-tuned at a lower rate, the same network from scratch) and compare
them on every cat and dog test image. Writes a table and a chart to the run directory and
publishes the best of the three as `cat-vs-dog`.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

from training import plots
from training.devices import DeviceName
from training.export import promote
from training.image_data import list_classes, resolve_root
from training.images import ImageConfig, TransferConfig, TransferMode, train_images
from training.run_dirs import new_run_dir


@dataclass
class TransferExperimentConfig:
    data: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    name: str = "cat-vs-dog"
    models_dir: str = "models"
    runs_dir: str = "runs"
    classes: list[str] = field(default_factory=lambda: ["cat", "dog"])
    checkpoint: str | None = None  # a pretrained run's checkpoint.pt; pretrains when absent
    pretrain_epochs: int = 4  # pretraining: on every class of `data` except `classes`
    train_per_class: int = 500
    epochs: int = 30
    batch_size: int = 100
    lr: float = 0.4
    backbone_lr_scale: float = 0.1
    seed: int = 0
    device: DeviceName = "auto"


def run_transfer_experiment(cfg: TransferExperimentConfig) -> Path:
    """Pretrain (unless given a checkpoint), train the three ways, publish the best."""
    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}-experiment")
    checkpoint = cfg.checkpoint
    if checkpoint is None:
        all_classes = list_classes(resolve_root(cfg.data) / "train")
        others = [c for c in all_classes if c not in cfg.classes]
        print(f"pretraining on {len(others)} classes: {', '.join(others)}")
        train_images(
            ImageConfig(
                data=cfg.data,
                name="pretrain",
                runs_dir=str(run_dir),
                classes=others,
                epochs=cfg.pretrain_epochs,
                seed=cfg.seed,
                device=cfg.device,
                export=False,
            )
        )
        checkpoint = str(next(run_dir.glob("pretrain-*/checkpoint.pt")))

    candidates = run_dir / "candidates"
    targets: dict[str, Path] = {}
    for mode in get_args(TransferMode):
        print(f"cat vs dog: {mode}")
        target = train_images(
            TransferConfig(
                data=cfg.data,
                name=f"{cfg.name}-{mode}",
                models_dir=str(candidates),
                runs_dir=str(run_dir),
                classes=cfg.classes,
                checkpoint=checkpoint,
                mode=mode,
                train_per_class=cfg.train_per_class,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                lr=cfg.lr,
                backbone_lr_scale=cfg.backbone_lr_scale,
                seed=cfg.seed,
                device=cfg.device,
            )
        )
        assert target is not None
        targets[mode] = target

    results = {
        mode: json.loads((target / "model.json").read_text())["metrics"]
        for mode, target in targets.items()
    }
    best = max(results, key=lambda mode: results[mode]["test_accuracy"])
    (run_dir / "results.json").write_text(
        json.dumps({"checkpoint": checkpoint, "best": best, "results": results}, indent=2)
    )
    lines = [
        f"| {cfg.name} ({cfg.train_per_class} training images per class) | test accuracy "
        "| without flip averaging | minutes |",
        "| --- | --- | --- | --- |",
    ]
    for mode, metrics in results.items():
        lines.append(
            f"| {mode} | {metrics['test_accuracy']:.4f} "
            f"| {metrics['test_accuracy_tta_none']:.4f} "
            f"| {metrics['training_minutes']} |"
        )
    table = "\n".join(lines)
    (run_dir / "results.md").write_text(table + "\n")
    plots.bars(
        {mode: m["test_accuracy"] for mode, m in results.items()},
        f"{cfg.name}: accuracy on {results[best]['test_images']} test images",
        run_dir / "accuracy.png",
    )
    print(table)
    published = promote(targets[best], Path(cfg.models_dir), cfg.name)
    print(f"best: {best}; published {published}")
    shutil.rmtree(candidates)
    return published
