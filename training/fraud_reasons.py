"""The reasons graph: which features pushed a fraud score up, as a second ONNX graph.

Gradient times difference, in log-odds: for each raw feature, d logit(p) / dx at the payment,
times (x minus the baseline, the training window's means). For a logistic model that is
exactly coefficient times (value minus baseline); for the served ensemble, each feature's
first-order share of how far the score stands from an average payment's. Taken at the
payment itself, the forward pass is the model's own, so the graph gives the probability too,
and a batch that wants reasons for every row runs this graph alone: one forward and one
backward pass, about twice the cost of scoring.

The piecewise-linear encoding has a kink at every bin edge, and integer counts and 0/1 flags
sit on those edges, where the gradient has two values. The graph takes the one on the
baseline's side, the slope along the way from the baseline to the payment as integrated
gradients would follow it (a night-time flag of 1 gets the whole slope of its one bin, not
the flat beyond it). It decides "on the edge" with a margin, so that ONNX Runtime and
PyTorch, which round the position in a bin differently, take the same side.

The backward pass is written out layer by layer, so that the exported graph holds plain
operations (ONNX has no autograd); a test holds it equal to PyTorch's autograd.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # training.fraud publishes this graph with its model
    from training.fraud import DerivedFeatures, FraudMLP, ServingFraudModel

METHOD = "gradient_times_difference"
# Values within this fraction of their column's narrowest bin of an edge count as on it: far
# above float32 rounding, far below the spacing of the whole values that sit on edges.
EDGE_MARGIN = 1e-4
ROUNDING_MARGIN = 16.0  # ...and at least this many float32 steps of the column's values


class FraudReasons(nn.Module):
    """Raw float32 `[n, columns]` features -> the model's probability `[n, 1]` and the
    attributions `[n, columns]` in log-odds."""

    def __init__(self, model: ServingFraudModel, baseline: np.ndarray) -> None:
        super().__init__()
        self.model = model.eval()
        self.register_buffer("baseline", torch.from_numpy(baseline.astype(np.float32)))
        derive = model.derive
        if derive.enabled:
            # One-hot rows that send the ratios' gradients back to the amount and averages.
            to_amount = torch.zeros(len(derive.columns))
            to_amount[derive.amount] = 1.0
            to_averages = torch.zeros(len(derive.averages), len(derive.columns))
            for row, column in enumerate(derive.averages):
                to_averages[row, column] = 1.0
            self.register_buffer("to_amount", to_amount)
            self.register_buffer("to_averages", to_averages)
        if model.encoding is not None:
            columns = model.encoding.columns
            bins_to_columns = torch.zeros(len(columns), derive.width)
            bins_to_columns[torch.arange(len(columns)), columns] = 1.0
            self.register_buffer("bins_to_columns", bins_to_columns)
            with torch.no_grad():  # the baseline's value of each bin's column
                binned_baseline = derive(self.baseline.unsqueeze(0))[0, columns]
            self.register_buffer("binned_baseline", binned_baseline)
            # One step per column, so that its bins still split the line without gap or
            # overlap once a value is nudged.
            narrowest = torch.full((derive.width,), math.inf).scatter_reduce(
                0, columns, model.encoding.width, "amin"
            )
            # And far above float32's rounding of the column's values: a nudge below it
            # would leave a value on its edge, where two runtimes' last bits disagree.
            edges = torch.cat([model.encoding.lower, model.encoding.lower + model.encoding.width])
            largest = torch.zeros(derive.width).scatter_reduce(
                0, torch.cat([columns, columns]), edges.abs(), "amax"
            )
            rounding = ROUNDING_MARGIN * torch.finfo(torch.float32).eps * largest
            self.register_buffer(
                "edge_step", torch.maximum(EDGE_MARGIN * narrowest, rounding)[columns]
            )
        self.register_buffer("first_weights", _first_weights(model.members))
        self.register_buffer("plain_first_weights", _first_weights(model.plain_members))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probability, gradient = self.gradient(features)
        return probability, gradient * (features - self.baseline)

    def gradient(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's probability `[n, 1]`, and d logit(p) / d raw features `[n, columns]`."""
        model, derive = self.model, self.model.derive
        derived = derive(features)
        scaled = (derived - model.mean) / model.std
        inputs = scaled
        if model.encoding is not None:
            binned = derived[:, model.encoding.columns]
            position = (binned - model.encoding.lower) / model.encoding.width
            inputs = torch.cat([scaled, position.clamp(0.0, 1.0)], dim=1)

        # logit(mean p) = log(mean p) - log(mean q), q = 1 - p: its derivative by member m's
        # logit is M p_m q_m / (sum p * sum q). In logs, so that a payment every member is
        # sure of (q underflowing to 0 in float32) keeps finite weights.
        groups = [
            (model.members, inputs, self.first_weights),
            (model.plain_members, scaled, self.plain_first_weights),
        ]
        forwards = [(_forward(m, sees)) for group, sees, _ in groups for m in group]
        logits = torch.stack([logit for logit, _ in forwards])  # [members, n]
        probability = torch.sigmoid(logits).mean(0).unsqueeze(1)  # as the model computes it
        log_p, log_q = _log_sigmoid(logits), _log_sigmoid(-logits)
        # log(p_m / sum p) by log-softmax, which subtracts the largest first: no cancellation
        # between logs of 1e5 when the members agree.
        log_weights = (
            math.log(len(forwards)) + F.log_softmax(log_p, dim=0) + F.log_softmax(log_q, dim=0)
        )
        weights = torch.exp(log_weights).unsqueeze(2)  # [members, n, 1]

        # The members' first layers go back in one product: their gradients side by side
        # times their first-layer weights stacked, which sums over the members.
        d_scaled, d_bins, index = torch.zeros_like(scaled), None, 0
        for group, _, first_weights in groups:
            if not group:
                continue
            firsts = []
            for member in group:
                outputs = forwards[index][1]
                firsts.append(_back_to_first_layer(member, outputs, weights[index]))
                index += 1
            d_group = torch.cat(firsts, dim=1) @ first_weights
            d_scaled = d_scaled + d_group[:, : derive.width]
            if group is model.members and model.encoding is not None:
                d_bins = d_group[:, derive.width :]

        # Back through the encoding (clamped: flat outside its bin) and the scaling. On an
        # edge, the bin on the baseline's side: a nudge toward it decides.
        d_derived = d_scaled / model.std
        if d_bins is not None and model.encoding is not None:
            toward = torch.where(binned > self.binned_baseline, -self.edge_step, self.edge_step)
            nudged = (binned + toward - model.encoding.lower) / model.encoding.width
            inside = (nudged >= 0.0) & (nudged < 1.0)
            through = torch.where(inside, d_bins / model.encoding.width, 0.0)
            d_derived = d_derived + through @ self.bins_to_columns
        return probability, _through_derived(self, derive, features, d_derived)


def _log_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """log(sigmoid(z)), finite for every finite z. (The exporter writes F.logsigmoid as
    Log(Sigmoid(z)), which is -inf once sigmoid(z) rounds to 0.)"""
    return torch.clamp(z, max=0.0) - torch.log(1.0 + torch.exp(-torch.abs(z)))


def _forward(member: FraudMLP, inputs: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The member's logit `[n]` and its hidden layers' outputs (dropout is the identity at
    inference)."""
    linears = [layer for layer in member.net if isinstance(layer, nn.Linear)]
    hidden, outputs = inputs, []
    for linear in linears[:-1]:
        hidden = torch.relu(linear(hidden))
        outputs.append(hidden)
    return linears[-1](hidden).squeeze(1), outputs


def _back_to_first_layer(
    member: FraudMLP, outputs: list[torch.Tensor], seed: torch.Tensor
) -> torch.Tensor:
    """`seed` `[n, 1]` times d logit / d (the first layer's output) `[n, width]`."""
    linears = [layer for layer in member.net if isinstance(layer, nn.Linear)]
    gradient = seed
    for linear, output in zip(reversed(linears[1:]), reversed(outputs), strict=True):
        # ReLU: no gradient where it gave 0. (A 0/1 mask: ONNX Runtime's Sign is slow.)
        gradient = (output > 0).to(output.dtype) * (gradient @ linear.weight)
    return gradient


def _first_weights(members: nn.ModuleList) -> torch.Tensor:
    """The members' first-layer weights stacked: `[sum of widths, inputs]`."""
    if not members:
        return torch.zeros(0)
    firsts = [next(m for m in member.net if isinstance(m, nn.Linear)) for member in members]
    return torch.cat([linear.weight.detach() for linear in firsts], dim=0)


def _through_derived(
    reasons: FraudReasons, derive: DerivedFeatures, x: torch.Tensor, d_derived: torch.Tensor
) -> torch.Tensor:
    """d / d raw features, from d / d derived features."""
    if not derive.enabled:
        return d_derived
    width = len(derive.columns)
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
    model: ServingFraudModel,
    features: torch.Tensor,
    baseline: torch.Tensor,
    at: torch.Tensor | None = None,
) -> torch.Tensor:
    """The same attributions by PyTorch's autograd, with the gradient taken `at` another
    point if given: what the explicit graph is checked on (off bin edges, where autograd
    adds both sides' slopes, or just off one)."""
    x = (features if at is None else at).detach().clone().requires_grad_(True)
    p = model(x).squeeze(1).double()
    logit = torch.log(p) - torch.log1p(-p)
    (gradient,) = torch.autograd.grad(logit.sum(), x)
    return gradient * (features - baseline)
