"""A small ResNet-style CNN, and the wrapper that folds preprocessing into the exported graph."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
        self.backbone = nn.Sequential(_conv_bn(3, stem), *stages)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes, bias=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """`[n, 3, h, w]` normalized images -> `[n, widths[-1]]` pooled features."""
        return self.pool(self.backbone(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Max-pooled features are large; scaling the logits keeps early training stable.
        return self.head(self.dropout(self.features(x))) * self.LOGIT_SCALE


def predict_probabilities(classifier: nn.Module, x: torch.Tensor, flip_tta: bool) -> torch.Tensor:
    """Class probabilities; with `flip_tta`, averaged with those of the mirrored image."""
    probabilities = torch.softmax(classifier(x).float(), dim=1)
    if flip_tta:
        mirrored = torch.softmax(classifier(x.flip(3)).float(), dim=1)
        probabilities = (probabilities + mirrored) / 2
    return probabilities


class ServingImageModel(nn.Module):
    """uint8 `[n, h, w, 3]` RGB pixels -> class probabilities, normalization in the graph."""

    def __init__(
        self,
        classifier: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.flip_tta = flip_tta
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return predict_probabilities(self.classifier, x, self.flip_tta)
