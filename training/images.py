"""`python -m training images`: train a CNN image classifier and export it.

Reads top to bottom: config -> data -> model -> loop -> evaluate -> save.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from app.model_card import ImagePreprocessing, Normalization
from training import efficientnet_lite, plots
from training.cnn import (
    TTA_VIEWS,
    Architecture,
    ServingImageModel,
    TestTimeAugmentation,
    WhitenedConvNet,
    build_classifier,
    predict_probabilities,
)
from training.devices import DeviceName, pick_device
from training.export import publish
from training.frozen_features import CACHEABLE_TTA, evaluate_features, saved_features
from training.image_data import (
    ImageSet,
    augment,
    list_classes,
    load_split,
    resolve_root,
    to_float_nchw,
)
from training.provenance import current_provenance
from training.run_dirs import new_run_dir
from training.schedules import ScheduleName, lr_multiplier

SMALL_INPUT = 64  # pixels a side, up to which evaluating every --tta choice is cheap
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)

FlipMode = Literal["none", "random", "alternating"]
TransferMode = Literal["frozen", "finetune", "scratch"]
BackboneName = Literal["checkpoint", "efficientnet-lite0"]
OptimizerName = Literal["sgd", "adamw"]


@dataclass
class ImageConfig:
    """Defaults: the CIFAR-10 recipe (whitened 8-layer CNN, lookahead, alternating flips)."""

    data: str = "../shared/datasets/cifar10-jpeg.tar.gz"
    name: str = "cifar10"
    models_dir: str = "models"
    runs_dir: str = "runs"
    classes: list[str] | None = None  # a subset of the class folders; all of them by default
    image_size: int = 32
    resize_shorter_to: int | None = None  # set for photo-sized inputs: resize, then center-crop
    arch: Architecture = "whitened"
    widths: list[int] = field(default_factory=lambda: [64, 256, 256])
    stem: int = 32  # resnet only: channels of the first convolution
    epochs: int = 14
    batch_size: int = 1024
    lr: float = 1.5
    bias_lr_scale: float = 64.0  # BatchNorm shifts learn this much faster, with the same decay
    optimizer: OptimizerName = "sgd"  # sgd: Nesterov momentum; adamw: decoupled weight decay
    momentum: float = 0.85  # sgd only
    weight_decay: float = 1.3e-3
    schedule: ScheduleName = "onecycle"
    warmup_fraction: float = 0.23
    lr_start_fraction: float = 0.2  # one-cycle: warm up from this fraction of the peak...
    lr_end_fraction: float = 0.07  # ...and decay to this one
    lookahead_every: int = 5  # steps between pulls towards the weights' running average; 0: off
    whiten_bias_epochs: int = 3  # whitened arch: the first layer's bias learns, then freezes
    label_smoothing: float = 0.2
    dropout: float = 0.0
    crop_padding: int = 2
    flip: FlipMode = "alternating"  # alternating: each image mirrored every other epoch
    # Views averaged at test time, in the exported graph: flip doubles the model's compute per
    # image, flip-translate multiplies it by six.
    tta: TestTimeAugmentation = "flip"
    val_fraction: float = 0.0
    early_stopping_patience: int = 0  # epochs without validation gain; 0 turns it off
    train_per_class: int | None = None
    test_per_class: int | None = None  # evaluate on a sample (quick runs on large images)
    seed: int = 0
    device: DeviceName = "auto"
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    resume: str | None = None
    export: bool = True
    fp16: bool = False  # also export a float16 graph, which GPUs serve where its parity holds


@dataclass
class TransferConfig(ImageConfig):
    """Start from a pretrained backbone, replace the head, learn a new label set.

    The backbone: a run's checkpoint (`--checkpoint`), or EfficientNet-Lite0 pretrained on
    ImageNet (`--backbone efficientnet-lite0`). Flags left unset take the backbone's recipe
    (`RECIPES`); `--crop-padding` defaults to a sixteenth of the input size.
    """

    backbone: BackboneName = "checkpoint"
    checkpoint: str = ""  # a run's checkpoint.pt (--backbone checkpoint, unless --mode scratch)
    # frozen: only the new head learns, on features computed once; finetune: all of it, the
    # backbone slower; scratch: the backbone's architecture from random weights.
    mode: TransferMode = "finetune"
    backbone_lr_scale: float | None = None  # finetune: the backbone learns this much slower
    name: str = "transfer"
    whiten_bias_epochs: int = 0
    # Left unset (None), these come from the backbone's recipe.
    image_size: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    optimizer: OptimizerName | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    bias_lr_scale: float | None = None
    lookahead_every: int | None = None
    label_smoothing: float | None = None
    dropout: float | None = None
    crop_padding: int | None = None

    def resolved(self) -> TransferConfig:
        """This config with each unset flag taken from the backbone's recipe."""
        recipe: dict = dict(RECIPES[self.backbone])
        fixed: dict = {}  # what the backbone's network decides, whatever the flags say
        if self.backbone == "efficientnet-lite0":
            fixed["arch"] = "efficientnet-lite0"
        elif self.checkpoint:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
            recipe["image_size"] = state["config"]["image_size"]
            fixed["arch"] = state.get("arch", "resnet")
            fixed["resize_shorter_to"] = state["config"].get("resize_shorter_to")
        if self.mode == "frozen":
            recipe["epochs"] = recipe["frozen_epochs"]
        unset = {f.name for f in dataclasses.fields(self) if getattr(self, f.name) is None}
        values = {name: recipe[name] for name in unset if name in recipe}
        config = dataclasses.replace(self, **values, **fixed)
        if config.crop_padding is None:
            config.crop_padding = config.image_size // 16
        return config


# Each backbone's defaults. The CIFAR checkpoints': the CNN recipe at a new head's pace. The
# ImageNet backbone's: AdamW, as fine-tuning usually goes, because its 1280 pooled features are
# large (squared norm in the thousands) and plain SGD at any useful rate throws the new head
# off; BatchNorm learns as the weights, EfficientNet's own dropout, a few epochs. A frozen head
# trains on cached features, where epochs cost next to nothing.
RECIPES: dict[str, dict[str, float | int | str]] = {
    "checkpoint": {
        "optimizer": "sgd",
        "image_size": 32,
        "epochs": 40,
        "frozen_epochs": 40,
        "batch_size": 100,
        "lr": 0.4,
        "momentum": 0.85,
        "weight_decay": 1.3e-3,
        "bias_lr_scale": 64.0,
        "lookahead_every": 5,
        "label_smoothing": 0.2,
        "dropout": 0.0,
        "backbone_lr_scale": 0.1,
    },
    "efficientnet-lite0": {
        "image_size": efficientnet_lite.IMAGE_SIZE,
        "epochs": 8,
        "frozen_epochs": 40,
        "batch_size": 50,
        "optimizer": "adamw",
        "lr": 1e-3,
        "momentum": 0.9,
        "weight_decay": 0.02,
        "bias_lr_scale": 1.0,
        "lookahead_every": 0,
        "label_smoothing": 0.1,
        "dropout": 0.2,
        "backbone_lr_scale": 0.3,
    },
}


def train_images(cfg: ImageConfig) -> Path | None:
    """Train an image classifier (from scratch, or from a checkpoint) and export it."""
    if isinstance(cfg, TransferConfig):
        cfg = cfg.resolved()
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    run_dir = new_run_dir(cfg.runs_dir, cfg.name)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))

    # Data
    root = resolve_root(cfg.data)
    classes = cfg.classes or list_classes(root / "train")
    normalization = _normalization(cfg)
    prep = ImagePreprocessing(
        height=cfg.image_size,
        width=cfg.image_size,
        resize="shorter_side_then_center_crop" if cfg.resize_shorter_to else "stretch",
        resize_shorter_to=cfg.resize_shorter_to,
        layout="NHWC",
        normalization=Normalization(mean=normalization[0], std=normalization[1], in_graph=True),
    )
    train = load_split(root / "train", prep, classes, cfg.train_per_class, cfg.seed)
    test = load_split(root / "test", prep, classes, cfg.test_per_class, cfg.seed)
    train, val = _split_validation(train, cfg.val_fraction, cfg.seed)
    print(
        f"data: {len(train)} train, {len(val) if val else 0} val, {len(test)} test, "
        f"{len(classes)} classes, device {device}"
    )
    mean = torch.tensor(normalization[0], device=device)
    std = torch.tensor(normalization[1], device=device)

    # Model
    model, frozen_backbone = _build_model(cfg, len(classes), train, mean, std)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = _optimizer(model, cfg)
    lookahead = Lookahead(model) if cfg.lookahead_every else None
    steps_per_epoch = -(-len(train) // cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict] = []
    start_epoch = 0
    if cfg.resume:
        state = torch.load(cfg.resume, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if lookahead is not None and state.get("lookahead"):
            lookahead.average = state["lookahead"]
        history, start_epoch = state["history"], state["epoch"]
    generator = torch.Generator().manual_seed(cfg.seed)
    mirrored_first = torch.rand(len(train), generator=generator) < 0.5
    lrs: list[float] = []
    best_val, stale = -1.0, 0
    if frozen_backbone:
        if cfg.tta not in CACHEABLE_TTA:
            raise SystemExit(f"--mode frozen caches an image and its mirror: --tta {CACHEABLE_TTA}")
        train_features = saved_features(
            model.backbone, train, mean, std, device, run_dir / "features-train.pt"
        )
        val_features = (
            saved_features(model.backbone, val, mean, std, device, run_dir / "features-val.pt")
            if val is not None
            else None
        )

    # Loop
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        model.train()
        if frozen_backbone:
            model.eval()  # keep the pretrained BatchNorm statistics
            model.dropout.train()
        whiten_bias = getattr(model, "whiten", None)
        if whiten_bias is not None and not frozen_backbone:
            whiten_bias.bias.requires_grad = epoch < cfg.whiten_bias_epochs
        order = torch.randperm(len(train), generator=generator)
        seen, loss_sum, correct = 0, 0.0, 0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for step_in_epoch in bar:
            step = epoch * steps_per_epoch + step_in_epoch
            lr = cfg.lr * lr_multiplier(
                cfg.schedule,
                step,
                total_steps,
                cfg.warmup_fraction,
                cfg.lr_start_fraction,
                cfg.lr_end_fraction,
            )
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            lrs.append(lr)
            index = order[step_in_epoch * cfg.batch_size : (step_in_epoch + 1) * cfg.batch_size]
            mirror = _mirror(cfg.flip, mirrored_first[index], epoch, generator)
            if frozen_backbone:
                view = mirror.long() if mirror is not None else torch.zeros_like(index)
                x, forward = train_features[index, view].to(device), model.classify
            else:
                x = to_float_nchw(
                    torch.from_numpy(train.pixels[index.numpy()]), mean.cpu(), std.cpu()
                )
                x = augment(x, cfg.crop_padding, mirror, generator)
                x, forward = x.to(device, memory_format=torch.channels_last), model
            y = torch.from_numpy(train.labels[index.numpy()]).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = forward(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            last_step = step + 1 == total_steps  # ends on the average, with this step in it
            if lookahead is not None and ((step + 1) % cfg.lookahead_every == 0 or last_step):
                lookahead.step(model, progress=(step + 1) / total_steps)
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
            "seconds": round(time.perf_counter() - started, 1),
        }
        if val is not None:
            val_loss, val_acc, _ = (
                evaluate_features(model, val_features, val.labels, cfg.tta)
                if frozen_backbone and val_features is not None
                else evaluate(model, val, mean, std, device, cfg.tta)
            )
            record.update(val_loss=val_loss, val_accuracy=val_acc)
        history.append(record)
        print(json.dumps(record))
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "lookahead": lookahead.average if lookahead is not None else None,
                "arch": cfg.arch,
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
    test_loss, test_acc, predictions = evaluate(model, test, mean, std, device, cfg.tta)
    metrics = {
        "test_accuracy": test_acc,
        "test_time_augmentation": cfg.tta,
        # What each choice of --tta would have scored (the card's metrics are flat); on
        # large inputs only the cheaper ones, as six views of 2,000 images at 224 take minutes.
        **{
            f"test_accuracy_tta_{tta}": (
                test_acc if tta == cfg.tta else evaluate(model, test, mean, std, device, tta)[1]
            )
            for tta in get_args(TestTimeAugmentation)
            if TTA_VIEWS[tta] <= TTA_VIEWS[cfg.tta] or cfg.image_size <= SMALL_INPUT
        },
        "test_loss": test_loss,
        "test_images": len(test),
        "input_size": cfg.image_size,
        "epochs": len(history),
        "training_minutes": round(sum(h.get("seconds", 0.0) for h in history) / 60, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if val is not None:
        metrics.update(val_accuracy=history[-1]["val_accuracy"], val_images=len(val))
    if isinstance(cfg, TransferConfig):
        metrics.update(transfer_mode=cfg.mode, backbone=cfg.backbone, train_images=len(train))
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
        normalization[0],
        normalization[1],
        tta=cfg.tta,
    )
    card = {
        "kind": "image_classifier",
        "description": _description(cfg, metrics["parameters"]),
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
    target = publish(serving, test.pixels[:64], card, Path(cfg.models_dir), cfg.name, fp16=cfg.fp16)
    print(f"exported {target}")
    return target


def _normalization(cfg: ImageConfig) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std in [0, 1] units: the ImageNet backbone's own, else CIFAR-10's."""
    if cfg.arch == "efficientnet-lite0":
        return efficientnet_lite.MEAN, efficientnet_lite.STD
    return CIFAR_MEAN, CIFAR_STD


def _description(cfg: ImageConfig, parameters: int) -> str:
    data = Path(cfg.data).name
    if not isinstance(cfg, TransferConfig):
        return f"{cfg.arch} CNN ({parameters:,} parameters) trained on {data}"
    if cfg.backbone == "efficientnet-lite0":
        origin = {
            "frozen": "ImageNet features (frozen) and a new head",
            "finetune": "fine-tuned from ImageNet",
            "scratch": "from scratch",
        }[cfg.mode]
        return f"EfficientNet-Lite0 ({parameters:,} parameters), {origin}, trained on {data}"
    origin = "" if cfg.mode == "scratch" else f", fine-tuned ({cfg.mode}) from {cfg.checkpoint}"
    return f"{cfg.arch} CNN ({parameters:,} parameters) trained on {data}{origin}"


def _build_model(
    cfg: ImageConfig, num_classes: int, train: ImageSet, mean: torch.Tensor, std: torch.Tensor
) -> tuple[nn.Module, bool]:
    """The network to train, and whether its backbone stays frozen."""
    if not isinstance(cfg, TransferConfig) or cfg.mode == "scratch":
        return _untrained(cfg, num_classes, train, mean, std), False
    if cfg.backbone == "efficientnet-lite0":
        model = efficientnet_lite.pretrained(num_classes, cfg.dropout)
        frozen = cfg.mode == "frozen"
        model.backbone.requires_grad_(not frozen)
        return model, frozen
    if not cfg.checkpoint:
        raise SystemExit("transfer: --checkpoint is required unless --mode scratch")
    state = torch.load(cfg.checkpoint, map_location="cpu", weights_only=False)
    model = build_classifier(state.get("arch", "resnet"), state["constructor_args"])
    model.load_state_dict(state["model"])
    has_bias = model.head.bias is not None
    model.head = nn.Linear(model.head.in_features, num_classes, bias=has_bias)
    model.constructor_args = {**model.constructor_args, "num_classes": num_classes}
    frozen = cfg.mode == "frozen"
    for parameter in model.backbone.parameters():
        parameter.requires_grad &= not frozen
    return model, frozen


def _untrained(
    cfg: ImageConfig, num_classes: int, train: ImageSet, mean: torch.Tensor, std: torch.Tensor
) -> nn.Module:
    """`cfg.arch` from random weights (the whitened net's first layer fitted to `train`)."""
    if cfg.arch == "efficientnet-lite0":
        return efficientnet_lite.EfficientNetLite0(num_classes, cfg.dropout)
    if cfg.arch == "resnet":
        return build_classifier(
            "resnet",
            {
                "num_classes": num_classes,
                "widths": cfg.widths,
                "stem": cfg.stem,
                "dropout": cfg.dropout,
            },
        )
    model = WhitenedConvNet(num_classes, cfg.widths, cfg.dropout)
    sample = torch.from_numpy(train.pixels[:5000])
    model.init_whitening(to_float_nchw(sample, mean.cpu(), std.cpu()))
    return model


def _optimizer(model: nn.Module, cfg: ImageConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW in parameter groups, each with an `lr_scale` of the scheduled
    rate.

    BatchNorm shifts learn `bias_lr_scale` times faster with the same decay per step; a
    fine-tuned backbone learns `backbone_lr_scale` times slower than its new head. Frozen
    parameters never get a gradient, and both optimizers skip those.
    """
    finetune = isinstance(cfg, TransferConfig) and cfg.mode == "finetune"
    backbone_scale = cfg.backbone_lr_scale if finetune else 1.0
    shifts = {
        id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.bias is not None
    }
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        lr_scale = 1.0 if name.startswith("head.") else backbone_scale
        decay = cfg.weight_decay
        if id(parameter) in shifts:
            lr_scale *= cfg.bias_lr_scale
            decay /= cfg.bias_lr_scale
        groups.setdefault((lr_scale, decay), []).append(parameter)
    param_groups = [
        {"params": params, "lr": cfg.lr * scale, "lr_scale": scale, "weight_decay": decay}
        for (scale, decay), params in groups.items()
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=cfg.lr)
    return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _mirror(
    mode: FlipMode, mirrored_first: torch.Tensor, epoch: int, generator: torch.Generator
) -> torch.Tensor | None:
    """Which images of the batch to mirror this epoch."""
    if mode == "none":
        return None
    if mode == "random":
        return torch.rand(len(mirrored_first), generator=generator) < 0.5
    # Alternating: a random half first, then every image flips each epoch, so each one is seen
    # both ways in every two epochs instead of by chance.
    return mirrored_first ^ bool(epoch % 2)


class Lookahead:
    """Pulls the weights towards their running average every few steps (hlb-CIFAR10's scheme).

    The average follows the weights closely early on and holds on more towards the end; the
    run ends on it. With BatchNorm's fast statistics this lets a short run settle.
    """

    def __init__(self, model: nn.Module) -> None:
        self.average = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def step(self, model: nn.Module, progress: float) -> None:
        decay = 0.95**5 * progress**3
        for key, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                self.average[key].lerp_(value, 1 - decay)
                value.copy_(self.average[key])


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    data: ImageSet,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    tta: TestTimeAugmentation = "none",
    views_per_batch: int = 500,  # views of 32x32 per network call (fewer when larger): memory
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predicted classes over `data`, as the exported model computes."""
    model.eval()
    loss_sum, predictions = 0.0, []
    height, width = data.pixels.shape[1:3]
    views = max(1, views_per_batch * 32 * 32 // (height * width))
    batch_size = max(1, views // TTA_VIEWS[tta])
    for start in range(0, len(data), batch_size):
        pixels = torch.from_numpy(data.pixels[start : start + batch_size]).to(device)
        x = to_float_nchw(pixels, mean, std).contiguous(memory_format=torch.channels_last)
        y = torch.from_numpy(data.labels[start : start + batch_size]).to(device)
        probabilities = predict_probabilities(model, x, tta)
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
