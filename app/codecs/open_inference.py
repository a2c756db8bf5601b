"""The Open Inference Protocol's view of a model: what it advertises (metadata, a
Triton-style configuration), which inputs a request may send it, and its answer's tensors.

The REST and gRPC front ends parse their wire formats into an `InferRequest` and write the
`Tensor`s back; the rules in between (what fits a model, what it answers) are written once
here.

What a model takes:
- its own ONNX input tensor (image models: the pixel rows, `UINT8 [N, H, W, C]`; fraud: the
  feature rows, `FP32 [N, 15]`, or `[N, 17]` for a version on the history's set), checked
  against the model card;
- image models also take `images`, `BYTES [N]` or `[N, 1]`: encoded images (JPEG, PNG, ...),
  decoded and resized by the service's own image preprocessing.
What it answers: its probabilities (`FP32 [N, classes]`), or with the classification
extension the top k classes of each row as `"score:index:label"` strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.codecs.tensors import BYTES, Tensor, all_finite, datatype_of
from app.errors import InvalidInput, ModelNotFound, ValidationFailed
from app.model_card import ModelCard

IMAGES_INPUT = "images"
PLATFORM = "onnxruntime_onnx"
SERVER_EXTENSIONS = [
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
]


@dataclass(slots=True)  # one per request: a frozen dataclass costs twice as much to build
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: as the request's `binary_data_output` says
    classification: int | None = None  # the top k classes instead of the tensor


@dataclass(slots=True)
class InferRequest:
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None  # None (or none listed): every output
    id: str | None = None
    binary_output: bool = False


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]  # -1: the batch axis
    optional: bool = False


@dataclass(slots=True)
class CheckedRequest:
    """A request that fits its model: what it gives the model (rows of the model's input
    tensor, or images to decode) and the outputs it asked for."""

    request: InferRequest
    rows: np.ndarray | None = None
    images: list[bytes] = field(default_factory=list)

    def __len__(self) -> int:  # the rows: what the data plane counts as the request's items
        return len(self.rows) if self.rows is not None else len(self.images)


def parse_version(model: str, raw: str) -> int | None:
    """A version from a path or a gRPC field; empty: the highest ready version."""
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:  # no version can be named so
        raise ModelNotFound(f"model {model!r} has no version {raw!r}")
    return int(raw)


def classification_of(output: str, value: object) -> int:
    """The `classification` parameter of a requested output: a count of classes."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidInput(f"output {output!r}: classification must be a positive count")
    return value


@dataclass(frozen=True, slots=True)
class ModelTensors:
    """What the protocol sees of one model card, worked out once per card: the inputs it
    accepts, the output it answers, and how many classes that output has."""

    inputs: tuple[TensorMetadata, ...]
    output: TensorMetadata
    classes: int  # the output's width, or two for a single sigmoid column

    @classmethod
    def of(cls, card: ModelCard) -> ModelTensors:
        cached = _TENSORS_BY_CARD.get(id(card))
        if cached is not None and cached[0] is card:
            return cached[1]
        spec = card.input
        own = TensorMetadata(spec.name, datatype_of(spec.dtype), _dims(spec.shape))
        inputs: tuple[TensorMetadata, ...] = (own,)
        if card.kind == "image_classifier":
            # Either one serves a request: both are optional, one of them required.
            inputs = (
                TensorMetadata(own.name, own.datatype, own.shape, optional=True),
                TensorMetadata(IMAGES_INPUT, BYTES, [-1, 1], optional=True),
            )
        out = card.outputs[0]  # the output the runtime serves
        output = TensorMetadata(out.name, "FP32", _dims(out.shape))
        width = output.shape[-1]
        classes = 2 if width == 1 and len(card.labels) == 2 else width
        tensors = cls(inputs, output, classes)
        _TENSORS_BY_CARD[id(card)] = (card, tensors)  # holding the card keeps its id unique
        return tensors

    def input_named(self, name: str) -> TensorMetadata | None:
        return next((m for m in self.inputs if m.name == name), None)


_TENSORS_BY_CARD: dict[int, tuple[ModelCard, ModelTensors]] = {}


def input_metadata(card: ModelCard) -> list[TensorMetadata]:
    return list(ModelTensors.of(card).inputs)


def output_metadata(card: ModelCard) -> list[TensorMetadata]:
    return [ModelTensors.of(card).output]


def model_metadata(card: ModelCard, versions: list[int]) -> dict[str, Any]:
    return {
        "name": card.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": [_meta_json(m) for m in input_metadata(card)],
        "outputs": [_meta_json(m) for m in output_metadata(card)],
    }


def model_config(card: ModelCard, max_rows: int, max_queue_delay_ms: float) -> dict[str, Any]:
    """The model as Triton's configuration describes it (its JSON form), which Triton's
    tools read: `max_batch_size` is the most rows one request may send."""
    return {
        "name": card.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "max_batch_size": max_rows,
        "input": [
            {
                "name": m.name,
                "data_type": f"TYPE_{'STRING' if m.datatype == BYTES else m.datatype}",
                "format": "FORMAT_NONE",
                "dims": m.shape[1:],
                "optional": m.optional,
            }
            for m in input_metadata(card)
        ],
        "output": [
            {
                "name": m.name,
                "data_type": f"TYPE_{m.datatype}",
                "dims": m.shape[1:],
                "label_filename": "",
            }
            for m in output_metadata(card)
        ],
        "dynamic_batching": {"max_queue_delay_microseconds": int(max_queue_delay_ms * 1000)},
    }


def check_request(request: InferRequest, card: ModelCard, max_rows: int) -> CheckedRequest:
    """The request checked against the model's card: its one input, and the outputs it
    asks for; or a clear error naming what is wrong."""
    tensors = ModelTensors.of(card)
    if len(request.inputs) != 1:
        raise InvalidInput(
            f"model {card.name!r} takes one input, {_names(tensors)}; the request has "
            f"{len(request.inputs)}"
        )
    tensor = request.inputs[0]
    meta = tensors.input_named(tensor.name)
    if meta is None:
        raise InvalidInput(
            f"unexpected inference input {tensor.name!r} for model {card.name!r}; "
            f"it takes {_names(tensors)}"
        )
    if tensor.datatype != meta.datatype:
        raise InvalidInput(
            f"input {tensor.name!r}: datatype {tensor.datatype}, expected {meta.datatype}"
        )
    shape = tensor.shape
    if meta.name == IMAGES_INPUT:
        if len(shape) not in (1, 2) or shape[1:] not in ((), (1,)):
            raise InvalidInput(
                f"input {tensor.name!r}: shape {list(shape)}, expected [N] or [N, 1]"
            )
    elif len(shape) != len(meta.shape) or list(shape[1:]) != meta.shape[1:]:
        expected = ", ".join(["N", *map(str, meta.shape[1:])])
        raise InvalidInput(f"input {tensor.name!r}: shape {list(shape)}, expected [{expected}]")
    if not 1 <= shape[0] <= max_rows:
        raise ValidationFailed(
            f"input {tensor.name!r}: {shape[0]} rows; send 1 to {max_rows} per request",
            [{"field": f"inputs.{tensor.name}.shape", "message": f"1 to {max_rows} rows"}],
        )
    if request.outputs:
        _check_outputs(request.outputs, card.name, tensors)  # before the model runs
    if isinstance(tensor.data, list):
        return CheckedRequest(request, images=tensor.data)
    if tensor.data.dtype.kind == "f" and not all_finite(tensor.data):
        raise InvalidInput(
            f"input {tensor.name!r}: values must be finite numbers within {tensor.datatype}'s range"
        )
    return CheckedRequest(request, rows=tensor.data)


def _names(tensors: ModelTensors) -> str:
    return " or ".join(repr(m.name) for m in tensors.inputs)


def _check_outputs(outputs: list[RequestedOutput], model: str, tensors: ModelTensors) -> None:
    meta = tensors.output
    seen: set[str] = set()
    for output in outputs:
        if output.name != meta.name:
            raise InvalidInput(
                f"unexpected inference output {output.name!r} for model {model!r}; "
                f"it has {meta.name!r}"
            )
        if output.name in seen:
            raise InvalidInput(f"output {output.name!r} is requested twice")
        seen.add(output.name)
        if output.classification is not None and output.classification > tensors.classes:
            raise InvalidInput(
                f"output {output.name!r}: classification must be 1 to {tensors.classes}, "
                f"not {output.classification}"
            )


def output_tensors(
    request: InferRequest, card: ModelCard, probabilities: np.ndarray
) -> list[tuple[Tensor, bool]]:
    """The answer's tensors, each with whether it goes as binary data (the request was
    checked by `check_request`)."""
    tensors = ModelTensors.of(card)
    requested = request.outputs or [RequestedOutput(tensors.output.name)]
    answer = []
    for output in requested:
        binary = request.binary_output if output.binary is None else output.binary
        if output.classification is None:
            data = np.ascontiguousarray(probabilities, np.float32)
            tensor = Tensor(output.name, "FP32", data.shape, data)
        else:
            tensor = _classification(output.name, card, probabilities, output.classification)
        answer.append((tensor, binary))
    return answer


def _classification(name: str, card: ModelCard, probabilities: np.ndarray, k: int) -> Tensor:
    """Triton's classification extension: the top k of each row, `"score:index:label"`."""
    scores = probabilities.reshape(len(probabilities), -1)
    if scores.shape[1] < ModelTensors.of(card).classes:  # one sigmoid column: P(second label)
        scores = np.concatenate([1.0 - scores, scores], axis=1)
    classes = scores.shape[1]
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    labels = card.labels if len(card.labels) == classes else [""] * classes
    data = [
        f"{row[j]:f}:{j}:{labels[j]}".encode()
        for row, order in zip(scores, best, strict=True)
        for j in order
    ]
    return Tensor(name, BYTES, (len(scores), k), data)


def _dims(shape: list[int | None]) -> list[int]:
    return [-1 if d is None else d for d in shape]


def _meta_json(meta: TensorMetadata) -> dict[str, Any]:
    return {"name": meta.name, "datatype": meta.datatype, "shape": meta.shape}
