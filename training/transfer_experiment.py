"""`python -m training transfer-experiment`: what a pretrained backbone is worth on little data.

The reference experiment: learn cat vs dog from 500 CIFAR-10 training images per class, four
ways, and compare them on every cat and dog test image:

- `imagenet-frozen`: EfficientNet-Lite0's ImageNet features, frozen, and a new head;
- `imagenet-finetune`: the same network fine-tuned, the backbone at a lower rate;
- `scratch`: the same architecture from random weights, same recipe;
- `cifar-finetune`: the earlier reference, a small CNN pretrained on the 8 other CIFAR-10
  classes and fine-tuned.

A fifth of the training images is held out as a validation split (the same for every run),
and the run best on it, never on the test set, is published as `cat-vs-dog`. Writes a table,
a chart and `results.json` to the run directory.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from training import plots
from training.devices import DeviceName
from training.export import promote
from training.image_data import list_classes, resolve_root
from training.images import ImageConfig, TransferConfig, train_images
from training.run_dirs import new_run_dir

# Run name -> (backbone, mode), in the table's order.
RUNS = {
    "imagenet-frozen": ("efficientnet-lite0", "frozen"),
    "imagenet-finetune": ("efficientnet-lite0", "finetune"),
    "scratch": ("efficientnet-lite0", "scratch"),
    "cifar-finetune": ("checkpoint", "finetune"),
}


@dataclass
class TransferExperimentConfig:
    data: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    name: str = "cat-vs-dog"
    models_dir: str = "models"
    runs_dir: str = "runs"
    classes: list[str] = field(default_factory=lambda: ["cat", "dog"])
    runs: list[str] = field(default_factory=lambda: list(RUNS))
    checkpoint: str | None = None  # cifar-finetune's pretrained checkpoint; pretrains if absent
    pretrain_epochs: int = 4  # that pretraining: on every class of `data` except `classes`
    train_per_class: int = 500
    val_fraction: float = 0.2  # held out of the training images; picks the published run
    image_size: int = 224  # EfficientNet-Lite0's input: the thumbnails are resized up to it
    epochs: int | None = None  # EfficientNet, fine-tuned and scratch; the recipe's when unset
    test_per_class: int | None = None  # all test images of the classes by default
    seed: int = 0
    device: DeviceName = "auto"


def run_transfer_experiment(cfg: TransferExperimentConfig) -> Path:
    """Train each way, tabulate, publish the best on the validation split."""
    unknown = set(cfg.runs) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; choose from {list(RUNS)}")
    if cfg.val_fraction <= 0:
        raise SystemExit(
            "the experiment picks its best run on a validation split: --val-fraction > 0"
        )
    run_dir = new_run_dir(cfg.runs_dir, f"{cfg.name}-experiment")
    candidates = run_dir / "candidates"
    targets: dict[str, Path] = {}
    minutes: dict[str, float] = {}
    for run in cfg.runs:
        backbone, mode = RUNS[run]
        started = time.perf_counter()
        checkpoint = ""
        if backbone == "checkpoint":
            checkpoint = cfg.checkpoint or _pretrain(cfg, run_dir)
        print(f"{cfg.name}: {run}")
        target = train_images(
            TransferConfig(
                data=cfg.data,
                name=f"{cfg.name}-{run}",
                models_dir=str(candidates),
                runs_dir=str(run_dir),
                classes=cfg.classes,
                backbone=backbone,  # type: ignore[arg-type]
                checkpoint=checkpoint,
                mode=mode,  # type: ignore[arg-type]
                train_per_class=cfg.train_per_class,
                test_per_class=cfg.test_per_class,
                val_fraction=cfg.val_fraction,
                image_size=cfg.image_size if backbone != "checkpoint" else None,
                epochs=cfg.epochs if backbone != "checkpoint" and mode != "frozen" else None,
                seed=cfg.seed,
                device=cfg.device,
            )
        )
        assert target is not None
        targets[run] = target
        minutes[run] = round((time.perf_counter() - started) / 60, 1)

    results = {
        run: {
            **json.loads((target / "model.json").read_text())["metrics"],
            "minutes": minutes[run],
        }
        for run, target in targets.items()
    }
    best = best_on_validation(results)
    (run_dir / "results.json").write_text(json.dumps({"best": best, "results": results}, indent=2))
    table = _table(cfg, results, best)
    (run_dir / "results.md").write_text(table + "\n")
    plots.bars(
        {
            f"validation ({results[best]['val_images']} images, chooses)": {
                run: r["val_accuracy"] for run, r in results.items()
            },
            f"test ({results[best]['test_images']} images)": {
                run: r["test_accuracy"] for run, r in results.items()
            },
        },
        f"{cfg.name}: {cfg.train_per_class} images per class, four ways",
        run_dir / "accuracy.png",
    )
    print(table)
    published = promote(targets[best], Path(cfg.models_dir), cfg.name)
    print(f"best on validation: {best}; published {published}")
    shutil.rmtree(candidates)
    return published


def best_on_validation(results: dict[str, dict]) -> str:
    """The run with the highest validation accuracy; the first listed among equals. Test
    accuracy plays no part."""
    return max(results, key=lambda run: results[run]["val_accuracy"])


def _pretrain(cfg: TransferExperimentConfig, run_dir: Path) -> str:
    """The small CNN on every class but the experiment's, for `cifar-finetune`."""
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
    return str(next(run_dir.glob("pretrain-*/checkpoint.pt")))


def _table(cfg: TransferExperimentConfig, results: dict[str, dict], best: str) -> str:
    any_run = next(iter(results.values()))
    lines = [
        f"| {cfg.name}, {cfg.train_per_class} images per class ({any_run['train_images']} "
        f"training, {any_run['val_images']} validation) | input "
        "| validation accuracy | test accuracy | minutes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run, metrics in results.items():
        size = metrics.get("input_size", "")
        mark = " (published)" if run == best else ""
        lines.append(
            f"| {run}{mark} | {size} | {metrics['val_accuracy']:.4f} "
            f"| {metrics['test_accuracy']:.4f} | {metrics['minutes']} |"
        )
    return "\n".join(lines)
