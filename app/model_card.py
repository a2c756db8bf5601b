"""The schema of `model.json`: the contract between `training/` and the service.

Every file in the model repository is validated against `ModelCard` on load; `training/`
builds its cards with the same classes, so the two sides cannot drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ModelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
ElementType = Literal["float32", "float16", "float64", "uint8", "int64", "int32"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One ONNX graph input or output. `None` in a shape is a dynamic axis."""

    name: str
    dtype: ElementType
    shape: list[int | None]

    @model_validator(mode="after")
    def _batch_axis_first(self) -> TensorSpec:
        if not self.shape or self.shape[0] is not None:
            raise ValueError(f"tensor {self.name!r}: the first axis must be the dynamic batch axis")
        return self


class Normalization(_Strict):
    """Per-channel `(x / 255 - mean) / std`, either inside the graph or by the service."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    in_graph: bool = Field(description="True when the ONNX graph normalizes its raw pixel input.")


class ImagePreprocessing(_Strict):
    """How a decoded RGB image becomes one row of the model's input tensor."""

    height: int = Field(gt=0, le=4096)
    width: int = Field(gt=0, le=4096)
    resize: Literal["stretch", "shorter_side_then_center_crop"] = Field(
        description="stretch: resize straight to height x width; "
        "shorter_side_then_center_crop: scale the shorter side to `resize_shorter_to`, "
        "then crop the center."
    )
    resize_shorter_to: int | None = Field(default=None, gt=0)
    layout: Literal["NHWC", "NCHW"]
    normalization: Normalization

    @model_validator(mode="after")
    def _crop_size(self) -> ImagePreprocessing:
        if self.resize == "shorter_side_then_center_crop":
            if self.resize_shorter_to is None:
                raise ValueError("resize_shorter_to is required for a center crop")
            if self.resize_shorter_to < max(self.height, self.width):
                raise ValueError("resize_shorter_to must be at least the crop size")
        return self


class TabularPreprocessing(_Strict):
    """The ordered feature columns of the input tensor (`[batch, len(features)]`)."""

    features: list[str] = Field(min_length=1)
    feature_set: str | None = Field(
        default=None,
        description="The named set the columns are (`app.fraud.features.FEATURE_SETS`), for "
        "models that score payments; a set the service computes from its history.",
    )
    scaling_in_graph: bool = Field(description="True when the graph standardizes its input.")


class Thresholds(_Strict):
    """Fraud decisions: approve below `review`, review below `decline`, else decline."""

    review: float = Field(ge=0.0, le=1.0)
    decline: float = Field(ge=0.0, le=1.0)
    rule: str = Field(description="How the thresholds were chosen, in words.")

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.review > self.decline:
            raise ValueError("the review threshold must not exceed the decline threshold")
        return self


class ReasonsGraph(_Strict):
    """A second graph beside the model that says which features pushed a score up: the same
    input rows in, one attribution per feature out (log-odds), run only on rows that need
    reasons; and, where it names `score_output`, the model's own output too, so that rows
    that all want reasons run this graph alone."""

    file: str = Field(default="reasons.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$")
    output: str = "attributions"
    score_output: str | None = Field(
        default=None,
        description="The graph's output that equals the model's first output for the same "
        "rows (computed on the way to the attributions); absent where it gives only these.",
    )
    method: Literal["gradient_times_difference", "integrated_gradients_midpoint"] = Field(
        description="How each feature's attribution is computed, both exact for a logistic "
        "model. gradient_times_difference: the gradient of the log-odds at the row times "
        "(value minus baseline). integrated_gradients_midpoint (earlier versions): the same "
        "with the gradient taken halfway between the row and the baseline."
    )
    baseline: list[float] = Field(
        min_length=1,
        description="Per input feature, in the input's order: the reference "
        "row attributions are measured from (the training window's means).",
    )


class HalfPrecisionGraph(_Strict):
    """The same model in float16 beside `model.onnx` (same inputs and outputs, float16
    inside), for GPUs: served there in its place, never on a CPU, which has no float16
    arithmetic to gain from. Published only where its parity with the trained model held."""

    file: str = Field(default="model.fp16.onnx", pattern=r"^[A-Za-z0-9._-]+\.onnx$")
    parity_tolerance: float = Field(
        gt=0.0, description="The largest |output - PyTorch float32's| it was allowed."
    )
    parity_max_abs_diff: float = Field(
        ge=0.0,
        description="What it was over the export's check inputs, in ONNX Runtime on the CPU "
        "(which runs float16 nodes in float32: the weights' rounding, not the arithmetic's).",
    )
    largest_activation: float = Field(
        ge=0.0,
        description="The largest |value| in the float32 graph over those inputs: far below "
        "float16's limit (65,504), or the arithmetic would overflow.",
    )

    @model_validator(mode="after")
    def _held(self) -> HalfPrecisionGraph:
        if self.parity_max_abs_diff > self.parity_tolerance:
            raise ValueError("the float16 graph's parity did not hold")
        return self


class BatchingDefaults(_Strict):
    """Server-side dynamic batching defaults; settings may override them."""

    max_batch_size: int = Field(default=32, ge=1, le=65536)
    max_queue_delay_ms: float = Field(default=0.0, ge=0.0, le=10_000.0)


class Provenance(_Strict):
    """Enough to rerun the training that produced the model."""

    command: str
    data: str
    seed: int
    created_at: datetime
    library_versions: dict[str, str]
    git_commit: str | None = None
    notes: str | None = None


class ModelCard(_Strict):
    """Everything the service needs to know about one model version."""

    schema_version: Literal[1] = 1
    name: ModelName
    version: int = Field(ge=1)
    kind: Literal["image_classifier", "tabular_classifier"]
    description: str = ""
    inputs: list[TensorSpec] = Field(min_length=1, max_length=1)
    outputs: list[TensorSpec] = Field(min_length=1)
    output_transform: Literal["none", "softmax", "sigmoid"] = Field(
        description="What turns the first output into probabilities; 'none' when the graph "
        "already ends in softmax or sigmoid."
    )
    labels: list[str] = Field(min_length=1)
    image: ImagePreprocessing | None = None
    tabular: TabularPreprocessing | None = None
    thresholds: Thresholds | None = None
    reasons: ReasonsGraph | None = None
    fp16: HalfPrecisionGraph | None = None
    batching: BatchingDefaults = BatchingDefaults()
    metrics: dict[str, int | float | str] = Field(default_factory=dict)
    provenance: Provenance

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.kind == "image_classifier":
            if self.image is None:
                raise ValueError("an image_classifier needs `image` preprocessing")
            if len(self.labels) < 2:
                raise ValueError("an image_classifier needs at least two labels")
        if self.kind == "tabular_classifier":
            if self.tabular is None:
                raise ValueError("a tabular_classifier needs `tabular` preprocessing")
            if self.thresholds is None:
                raise ValueError("a tabular_classifier needs decision `thresholds`")
            width = self.inputs[0].shape[1:]
            if width != [len(self.tabular.features)]:
                raise ValueError(
                    f"input shape {self.inputs[0].shape} does not match "
                    f"{len(self.tabular.features)} features"
                )
        if self.fp16 is not None and self.fp16.file == "model.onnx":
            raise ValueError("the float16 graph needs a file of its own")
        if self.reasons is not None:
            if self.tabular is None:
                raise ValueError("reasons are for tabular models")
            if len(self.reasons.baseline) != len(self.tabular.features):
                raise ValueError("the reasons baseline needs one value per feature")
        return self

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]
