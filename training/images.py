"""`python -m training images`: train a CNN image classifier and export it.

Reads top to bottom: config -> data -> model -> loop -> evaluate -> save.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from app.model_card import ImagePreprocessing, Normalization
from training import plots
from training.cnn import ResNetSmall, ServingImageModel, predict_probabilities
from training.devices import DeviceName, pick_device
from training.export import publish
from training.image_data import (
    ImageSet,
    augment,
    list_classes,
    load_split,
    resolve_root,
    to_float_nchw,
)
from training.provenance import current_provenance
from training.schedules import ScheduleName, lr_multiplier

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class ImageConfig:
    data: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    name: str = "cifar10"
    models_dir: str = "models"
    runs_dir: str = "runs"
    image_size: int = 32
    resize_shorter_to: int | None = None  # set for photo-sized inputs: resize, then center-crop
    widths: list[int] = field(default_factory=lambda: [64, 128, 256])
    stem: int = 32
    epochs: int = 10
    batch_size: int = 256
    lr: float = 0.2
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: ScheduleName = "onecycle"
    warmup_fraction: float = 0.2
    label_smoothing: float = 0.2
    dropout: float = 0.0
    crop_padding: int = 4
    flip: bool = True
    flip_tta: bool = True  # average with the mirrored image at test time, in the exported graph
    val_fraction: float = 0.0
    early_stopping_patience: int = 0  # epochs without validation gain; 0 turns it off
    train_per_class: int | None = None
    seed: int = 0
    device: DeviceName = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    resume: str | None = None
    export: bool = True


def train_images(cfg: ImageConfig) -> Path | None:
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    run_dir = Path(cfg.runs_dir) / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # Data
    root = resolve_root(cfg.data)
    classes = list_classes(root / "train")
    prep = ImagePreprocessing(
        height=cfg.image_size,
        width=cfg.image_size,
        resize="shorter_side_then_center_crop" if cfg.resize_shorter_to else "stretch",
        resize_shorter_to=cfg.resize_shorter_to,
        layout="NHWC",
        normalization=Normalization(mean=CIFAR_MEAN, std=CIFAR_STD, in_graph=True),
    )
    train = load_split(root / "train", prep, classes, cfg.train_per_class, cfg.seed)
    test = load_split(root / "test", prep, classes)
    train, val = _split_validation(train, cfg.val_fraction, cfg.seed)
    print(
        f"data: {len(train)} train, {len(val) if val else 0} val, {len(test)} test, "
        f"{len(classes)} classes, device {device}"
    )

    # Model
    model = ResNetSmall(len(classes), cfg.widths, cfg.stem, cfg.dropout).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict] = []
    start_epoch = 0
    if cfg.resume:
        state = torch.load(cfg.resume, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch = state["history"], state["epoch"]
    mean = torch.tensor(CIFAR_MEAN, device=device)
    std = torch.tensor(CIFAR_STD, device=device)
    generator = torch.Generator().manual_seed(cfg.seed)
    lrs: list[float] = []
    best_val, stale = -1.0, 0

    # Loop
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for step_in_epoch in bar:
            step = epoch * steps_per_epoch + step_in_epoch
            lr = cfg.lr * lr_multiplier(cfg.schedule, step, total_steps, cfg.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            lrs.append(lr)
            index = order[step_in_epoch * cfg.batch_size : (step_in_epoch + 1) * cfg.batch_size]
            x = to_float_nchw(torch.from_numpy(train.pixels[index.numpy()]), mean.cpu(), std.cpu())
            x = augment(x, cfg.crop_padding, cfg.flip, generator)
            x = x.to(device, memory_format=torch.channels_last)
            y = torch.from_numpy(train.labels[index.numpy()]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            bar.set_postfix(
                loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", lr=f"{lr:.4f}"
            )
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "lr": lr,
        }
        if val is not None:
            val_loss, val_acc, _ = evaluate(model, val, mean, std, device, cfg.flip_tta)
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        history.append(record)
        print(json.dumps(record))
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "constructor_args": model.constructor_args,
                "config": asdict(cfg),
                "classes": classes,
                "history": history,
                "epoch": epoch + 1,
            },
            run_dir / "checkpoint.pt",
        )
        if val is not None and cfg.early_stopping_patience:
            if record["val_accuracy"] > best_val:
                best_val, stale = record["val_accuracy"], 0
            else:
                stale += 1
                if stale >= cfg.early_stopping_patience:
                    print(f"early stop: no validation gain for {stale} epochs")
                    break

    # Evaluate
    test_loss, test_acc, predictions = evaluate(model, test, mean, std, device, cfg.flip_tta)
    metrics = {
        "test_accuracy": test_acc,
        "test_time_augmentation": "horizontal flip" if cfg.flip_tta else "none",
        "test_loss": test_loss,
        "test_images": len(test),
        "epochs": len(history),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    print(json.dumps(metrics))
    (run_dir / "metrics.json").write_text(
        json.dumps({"history": history, "test": metrics}, indent=2)
    )
    plots.training_curves(history, run_dir / "curves.png")
    plots.lr_schedule(lrs, run_dir / "lr_schedule.png")
    plots.confusion_matrix(test.labels, predictions, classes, run_dir / "confusion_matrix.png")
    if not cfg.export:
        return None

    # Save
    serving = ServingImageModel(
        model.float().cpu().to(memory_format=torch.contiguous_format),
        CIFAR_MEAN,
        CIFAR_STD,
        flip_tta=cfg.flip_tta,
    )
    card = {
        "kind": "image_classifier",
        "description": f"ResNet-style CNN ({metrics['parameters']:,} parameters) trained on "
        f"{Path(cfg.data).name}",
        "inputs": [
            {"name": "pixels", "dtype": "uint8", "shape": [None, cfg.image_size, cfg.image_size, 3]}
        ],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": [None, len(classes)]}],
        "output_transform": "none",
        "labels": classes,
        "image": prep.model_dump(),
        "batching": {"max_batch_size": 32, "max_queue_delay_ms": 0.0},
        "metrics": metrics,
        "provenance": current_provenance(cfg.data, cfg.seed).model_dump(),
    }
    target = publish(serving, test.pixels[:64], card, Path(cfg.models_dir), cfg.name)
    print(f"exported {target}")
    return target


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: ImageSet,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    flip_tta: bool = False,
    batch_size: int = 500,
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predicted classes over `data`, as the exported model computes."""
    model.eval()
    loss_sum, predictions = 0.0, []
    for start in range(0, len(data), batch_size):
        pixels = torch.from_numpy(data.pixels[start : start + batch_size]).to(device)
        x = to_float_nchw(pixels, mean, std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(data.labels[start : start + batch_size]).to(device)
        probabilities = predict_probabilities(model, x, flip_tta)
        loss_sum += F.nll_loss(probabilities.clamp_min(1e-12).log(), y, reduction="sum").item()
        predictions.append(probabilities.argmax(1).cpu().numpy())
    predicted = np.concatenate(predictions)
    return loss_sum / len(data), float((predicted == data.labels).mean()), predicted


def _split_validation(
    data: ImageSet, fraction: float, seed: int
) -> tuple[ImageSet, ImageSet | None]:
    if fraction <= 0:
        return data, None
    order = np.random.default_rng(seed).permutation(len(data))
    cut = int(len(data) * fraction)
    val, train = order[:cut], order[cut:]
    return (
        ImageSet(data.pixels[train], data.labels[train], data.classes),
        ImageSet(data.pixels[val], data.labels[val], data.classes),
    )
