"""Frozen backbones: each image's features computed once, and only the head learns on them.

A frozen backbone gives the same features every epoch, so running it each epoch would repeat
the whole cost of the network (EfficientNet-Lite0 at 224x224: about 30 ms an image on two
cores) for nothing. The features of each image and of its mirror are computed once, saved in
the run directory, and the head's epochs then take a fraction of a second. Mirroring is the
augmentation kept; random crops would need the backbone again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from training.cnn import TestTimeAugmentation
from training.image_data import ImageSet, to_float_nchw

VIEWS = 2  # the image, then its mirror
CACHEABLE_TTA = ("none", "flip")  # test-time views that cached features can give


@torch.no_grad()
def compute_features(
    backbone: nn.Module,
    data: ImageSet,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    description: str,
    batch_size: int = 50,
) -> torch.Tensor:
    """`[n, 2, features]`: each image's pooled features, then its mirror's."""
    backbone.eval()
    parts = []
    for start in tqdm(range(0, len(data), batch_size), desc=description):
        pixels = torch.from_numpy(data.pixels[start : start + batch_size]).to(device)
        x = to_float_nchw(pixels, mean, std)
        x = torch.cat([x, x.flip(3)]).contiguous(memory_format=torch.channels_last)
        parts.append(backbone(x).float().unflatten(0, (VIEWS, -1)).transpose(0, 1).cpu())
    return torch.cat(parts)


def saved_features(
    backbone: nn.Module,
    data: ImageSet,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    path: Path,
) -> torch.Tensor:
    """`compute_features`, kept at `path` in the run directory beside the checkpoint (the
    head alone is not enough to look into what it learned)."""
    features = compute_features(backbone, data, mean, std, device, path.stem)
    torch.save(features, path)
    return features


@torch.no_grad()
def evaluate_features(
    model: nn.Module, features: torch.Tensor, labels: np.ndarray, tta: TestTimeAugmentation
) -> tuple[float, float, np.ndarray]:
    """Mean loss, accuracy and predicted classes, as `images.evaluate` computes them from
    pixels: probabilities averaged over the image and its mirror when `tta` is `flip`."""
    if tta not in CACHEABLE_TTA:
        raise ValueError(f"cached features hold an image and its mirror, not the views of {tta}")
    model.eval()
    device = next(model.parameters()).device
    views = (features[:, :1] if tta == "none" else features).to(device)
    logits = model.classify(views.flatten(0, 1)).float().unflatten(0, (len(features), -1))
    probabilities = torch.softmax(logits, dim=2).mean(1).cpu()
    target = torch.from_numpy(labels)
    loss = F.nll_loss(probabilities.clamp_min(1e-12).log(), target).item()
    predicted = probabilities.argmax(1).numpy()
    return loss, float((predicted == labels).mean()), predicted
