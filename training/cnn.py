"""Image classifiers for small inputs, and the wrapper that folds preprocessing into the graph.

Every classifier exposes `backbone` (pixels -> pooled features), `classify` (features ->
logits, through `head`) and `constructor_args`, so transfer learning can swap the head, train it
alone on cached features, and a checkpoint rebuilds alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from training.efficientnet_lite import EfficientNetLite0


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.GELU()
    )


class _Stage(nn.Module):
    """Conv, 2x2 max-pool, then a residual pair of convs at the pooled resolution."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(cout),
            nn.GELU(),
        )
        self.residual = nn.Sequential(_conv_bn(cout, cout), _conv_bn(cout, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.residual(x)


class ResNetSmall(nn.Module):
    """ResNet-style classifier; each stage halves the resolution. Logits out."""

    LOGIT_SCALE = 0.125

    def __init__(
        self,
        num_classes: int,
        widths: Sequence[int] = (64, 128, 256),
        stem: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.constructor_args = {
            "num_classes": num_classes,
            "widths": list(widths),
            "stem": stem,
            "dropout": dropout,
        }
        stages, cin = [], stem
        for width in widths:
            stages.append(_Stage(cin, width))
            cin = width
        self.backbone = nn.Sequential(
            _conv_bn(3, stem), *stages, nn.AdaptiveMaxPool2d(1), nn.Flatten()
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        # Max-pooled features are large; scaling the logits keeps early training stable.
        return self.head(self.dropout(features)) * self.LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.backbone(x))


class _Block(nn.Module):
    """Conv, 2x2 max-pool, BN, GELU, conv, BN, GELU; convs start as identities."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = _identity_conv(cin, cout)
        self.norm1 = _shift_only_batch_norm(cout)
        self.conv2 = _identity_conv(cout, cout)
        self.norm2 = _shift_only_batch_norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.norm1(F.max_pool2d(self.conv1(x), 2)))
        return F.gelu(self.norm2(self.conv2(x)))


class WhitenedConvNet(nn.Module):
    """An 8-layer CNN whose first layer is a frozen patch-whitening filter bank.

    The recipe behind the CIFAR-10 speed records (Page 2018; hlb-CIFAR10; Jordan 2024's
    airbench): whitening the 2x2 patches of the training data up front, identity-initialised
    convolutions and BatchNorm without a scale let a 2M-parameter net learn in few epochs.
    Call `init_whitening(images)` before training from scratch.
    """

    LOGIT_SCALE = 1 / 9
    WHITEN_KERNEL = 2

    def __init__(
        self, num_classes: int, widths: Sequence[int] = (64, 256, 256), dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.constructor_args = {
            "num_classes": num_classes,
            "widths": list(widths),
            "dropout": dropout,
        }
        # Each whitening direction twice, with both signs, so the GELU after it loses nothing.
        whiten_width = 2 * 3 * self.WHITEN_KERNEL**2
        whiten = nn.Conv2d(3, whiten_width, self.WHITEN_KERNEL, padding=0, bias=True)
        whiten.weight.requires_grad = False
        nn.init.zeros_(whiten.bias)
        blocks, cin = [], whiten_width
        for width in widths:
            blocks.append(_Block(cin, width))
            cin = width
        self.backbone = nn.Sequential(
            whiten, nn.GELU(), *blocks, nn.AdaptiveMaxPool2d(1), nn.Flatten()
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes, bias=False)

    @property
    def whiten(self) -> nn.Conv2d:
        return self.backbone[0]

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first layer to whiten the patches of `images` (normalized, `[n, 3, h, w]`)."""
        k = self.WHITEN_KERNEL
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)  # [n, 3, h', w', k, k]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k)
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).reshape(-1, 3, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features)) * self.LOGIT_SCALE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.backbone(x))


def _identity_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(cin, cout)])
    return conv


def _shift_only_batch_norm(channels: int) -> nn.BatchNorm2d:
    # A fast-moving average of the statistics, and a learned shift but no learned scale.
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad = False
    return norm


Architecture = Literal["whitened", "resnet"]
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "whitened": WhitenedConvNet,
    "resnet": ResNetSmall,
    "efficientnet-lite0": EfficientNetLite0,  # transfer runs (`--backbone`), not `--arch`
}


def build_classifier(arch: str, constructor_args: dict) -> nn.Module:
    return ARCHITECTURES[arch](**constructor_args)


TestTimeAugmentation = Literal["none", "flip", "flip-translate"]
TTA_VIEWS: dict[str, int] = {"none": 1, "flip": 2, "flip-translate": 6}


def predict_probabilities(
    classifier: nn.Module, x: torch.Tensor, tta: TestTimeAugmentation
) -> torch.Tensor:
    """Class probabilities, averaged over the views that `tta` names.

    `flip`: the image and its mirror. `flip-translate`: also both of them shifted one pixel
    up-left and one down-right (reflect-padded), the shifted pairs weighing half as much as
    the unshifted one. All views go through the network as one batch.
    """
    views, weights = [x], [2.0]
    if tta == "flip-translate":
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        views += [padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]]
        weights += [1.0, 1.0]
    if tta != "none":
        views += [view.flip(3) for view in views]
        weights += weights
    logits = classifier(torch.cat(views) if len(views) > 1 else x).float()
    probabilities = torch.softmax(logits, dim=1).unflatten(0, (len(views), -1))
    weight = torch.tensor(weights, device=x.device) / sum(weights)
    return (probabilities * weight[:, None, None]).sum(0)


class ServingImageModel(nn.Module):
    """uint8 `[n, h, w, 3]` RGB pixels -> class probabilities, normalization in the graph."""

    def __init__(
        self,
        classifier: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        tta: TestTimeAugmentation = "none",
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.tta = tta
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return predict_probabilities(self.classifier, x, self.tta)
