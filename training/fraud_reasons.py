"""The reasons graph: which features pushed a fraud score up, as a second ONNX graph.

Integrated gradients (Sundararajan et al., 2017) in log-odds, with one step at the midpoint:
for each raw feature, d logit(p) / dx at the point halfway between the payment and the
baseline (the training window's means), times (x minus baseline). For a logistic model that
is exactly coefficient times (value minus baseline); for the served ensemble, each feature's
share of how far the score stands from an average payment's, to second order. The midpoint
rather than the payment itself: the piecewise-linear encoding has a kink at every bin edge,
and integer counts sit on those edges, where a gradient is not defined. One forward and one
backward pass: about three times the cost of scoring, where ablating each feature in turn
would cost sixteen.

The backward pass is written out layer by layer, so that the exported graph holds plain
operations (ONNX has no autograd); a test holds it equal to PyTorch's autograd.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from app.fraud.features import FEATURES

if TYPE_CHECKING:  # training.fraud publishes this graph with its model
    from training.fraud import DerivedFeatures, FraudMLP, ServingFraudModel

METHOD = "integrated_gradients_midpoint"


class FraudReasons(nn.Module):
    """Raw float32 `[n, 15]` features -> attributions `[n, 15]` in log-odds."""

    def __init__(self, model: ServingFraudModel, baseline: np.ndarray) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("baseline", torch.from_numpy(baseline.astype(np.float32)))
        derive = model.derive
        if derive.enabled:
            # One-hot rows that send the ratios' gradients back to the amount and averages.
            to_amount = torch.zeros(len(FEATURES))
            to_amount[derive.amount] = 1.0
            to_averages = torch.zeros(len(derive.averages), len(FEATURES))
            for row, column in enumerate(derive.averages):
                to_averages[row, column] = 1.0
            self.register_buffer("to_amount", to_amount)
            self.register_buffer("to_averages", to_averages)
        if model.encoding is not None:
            columns = model.encoding.columns
            bins_to_columns = torch.zeros(len(columns), derive.width)
            bins_to_columns[torch.arange(len(columns)), columns] = 1.0
            self.register_buffer("bins_to_columns", bins_to_columns)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.gradient((features + self.baseline) * 0.5) * (features - self.baseline)

    def gradient(self, features: torch.Tensor) -> torch.Tensor:
        """d logit(p) / d raw features `[n, 15]`."""
        model, derive = self.model, self.model.derive
        derived = derive(features)
        scaled = (derived - model.mean) / model.std
        inputs = scaled
        if model.encoding is not None:
            position = (derived[:, model.encoding.columns] - model.encoding.lower) / (
                model.encoding.width
            )
            inputs = torch.cat([scaled, position.clamp(0.0, 1.0)], dim=1)

        # d mean(p) / d inputs, member by member: p = sigmoid(z), dp/dz = p (1 - p).
        slopes, p_sum, q_sum = [], 0.0, 0.0
        for member, sees in [(m, inputs) for m in model.members] + [
            (m, scaled) for m in model.plain_members
        ]:
            logit, gradient = _logit_and_gradient(member, sees)
            p, q = torch.sigmoid(logit), torch.sigmoid(-logit)  # q: 1 - p, accurate near 1
            p_sum, q_sum = p_sum + p, q_sum + q
            slope = (p * q).unsqueeze(1) * gradient
            if gradient.shape[1] < inputs.shape[1]:  # a plain member: nothing from the bins
                slope = torch.cat([slope, torch.zeros_like(inputs[:, slope.shape[1] :])], dim=1)
            slopes.append(slope)
        # logit(mean p) = log(mean p) - log(mean q): its derivative divides by both.
        count = len(slopes)
        d_inputs = torch.stack(slopes).sum(0) * (count / (p_sum * q_sum)).unsqueeze(1)

        # Back through the encoding (clamped: flat outside its bin) and the scaling.
        d_derived = d_inputs[:, : derive.width] / model.std
        if model.encoding is not None:
            inside = ((position >= 0.0) & (position <= 1.0)).to(features.dtype)
            d_bins = d_inputs[:, derive.width :] * inside / model.encoding.width
            d_derived = d_derived + d_bins @ self.bins_to_columns
        return _through_derived(self, derive, features, d_derived)


def _logit_and_gradient(
    member: FraudMLP, inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The member's logit `[n]` and its gradient with respect to `inputs` `[n, width]`
    (dropout is the identity at inference)."""
    linears = [layer for layer in member.net if isinstance(layer, nn.Linear)]
    hidden, active = inputs, []
    for linear in linears[:-1]:
        before = linear(hidden)
        on = (before > 0).to(inputs.dtype)
        hidden = before * on
        active.append(on)
    last = linears[-1]
    logit = last(hidden).squeeze(1)
    gradient = last.weight.expand(inputs.shape[0], -1)
    for linear, on in zip(reversed(linears[:-1]), reversed(active), strict=True):
        gradient = (gradient * on) @ linear.weight
    return logit, gradient


def _through_derived(
    reasons: FraudReasons, derive: DerivedFeatures, x: torch.Tensor, d_derived: torch.Tensor
) -> torch.Tensor:
    """d / d raw features, from d / d derived features."""
    if not derive.enabled:
        return d_derived
    width = len(FEATURES)
    # log1p(max(x, 0)) where logged: 1 / (1 + x) from 0 up (clamp passes its bound), else 0.
    logged_slope = torch.where(x >= 0, 1.0 / (1.0 + x.clamp_min(0)), torch.zeros_like(x))
    slope = torch.where(derive.log_mask, logged_slope, torch.ones_like(x))
    d_x = d_derived[:, :width] * slope
    # log1p(amount / (average + 1)) for each of the three averages.
    amount = x[:, derive.amount : derive.amount + 1]
    shifted = x[:, derive.averages] + 1.0
    ratio = amount / shifted
    d_ratio = d_derived[:, width:] / (1.0 + ratio)
    d_amount = (d_ratio / shifted).sum(1, keepdim=True) * reasons.to_amount
    d_averages = (-d_ratio * ratio / shifted) @ reasons.to_averages
    return d_x + d_amount + d_averages


def autograd_attributions(
    model: ServingFraudModel, features: torch.Tensor, baseline: torch.Tensor
) -> torch.Tensor:
    """The same attributions by PyTorch's autograd: what the explicit graph is checked on."""
    x = ((features + baseline) * 0.5).detach().requires_grad_(True)
    p = model(x).squeeze(1).double()
    logit = torch.log(p) - torch.log1p(-p)
    (gradient,) = torch.autograd.grad(logit.sum(), x)
    return gradient * (features - baseline)
