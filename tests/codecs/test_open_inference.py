"""A model card as the Open Inference Protocol sees it: inputs accepted, outputs written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.codecs.open_inference import (
    InferRequest,
    RequestedOutput,
    check_request,
    input_metadata,
    model_config,
    output_tensors,
    parse_version,
)
from app.codecs.tensors import Tensor
from app.codecs.transactions import needs_history
from app.errors import InvalidInput, ModelNotFound, ValidationFailed
from app.model_card import ModelCard
from app.serving.repository import discover, read_card

MODELS = Path(__file__).resolve().parents[2] / "models"


def _card(name: str) -> ModelCard:
    """The version v2 serves by default: the newest that takes the client's own inputs."""
    cards = [read_card(v) for v in discover(MODELS)[name]]
    return max((c for c in cards if not needs_history(c)), key=lambda c: c.version)


def _rows(name: str, shape: list[int], dtype: str = "float32") -> Tensor:
    array = np.zeros(shape, dtype)
    return Tensor(name, {"float32": "FP32", "uint8": "UINT8"}[dtype], tuple(shape), array)


def test_image_models_take_their_pixel_rows_or_encoded_images() -> None:
    card = _card("cifar10")
    names = [(m.name, m.datatype, m.shape, m.optional) for m in input_metadata(card)]
    assert names == [
        ("pixels", "UINT8", [-1, 32, 32, 3], True),
        ("images", "BYTES", [-1, 1], True),
    ]
    pixels = check_request(InferRequest([_rows("pixels", [2, 32, 32, 3], "uint8")]), card, 64)
    assert pixels.rows is not None and pixels.rows.shape == (2, 32, 32, 3)
    for shape in [(3,), (3, 1)]:
        images = Tensor("images", "BYTES", shape, [b"a", b"b", b"c"])
        assert check_request(InferRequest([images]), card, 64).images == [b"a", b"b", b"c"]


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (Tensor("pixel", "UINT8", (1,), np.zeros(1, "uint8")), "unexpected inference input"),
        (Tensor("pixels", "FP32", (1, 32, 32, 3), np.zeros((1, 32, 32, 3), "float32")),
         "datatype FP32, expected UINT8"),
        (Tensor("pixels", "UINT8", (1, 32, 32), np.zeros((1, 32, 32), "uint8")),
         "expected \\[N, 32, 32, 3\\]"),
        (Tensor("images", "BYTES", (1, 2), [b"a", b"b"]), "expected \\[N\\] or \\[N, 1\\]"),
    ],
)  # fmt: skip
def test_a_wrong_input_is_named_with_what_the_model_takes(tensor: Tensor, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_request(InferRequest([tensor]), _card("cifar10"), 64)


def test_rows_beyond_the_request_limit_and_extra_inputs_are_refused() -> None:
    card = _card("fraud")
    with pytest.raises(ValidationFailed, match="3 rows; send 1 to 2 per request"):
        check_request(InferRequest([_rows("features", [3, 15])]), card, 2)
    with pytest.raises(InvalidInput, match="takes one input"):
        check_request(InferRequest([_rows("features", [1, 15])] * 2), card, 2)
    with pytest.raises(InvalidInput, match="unexpected inference output 'score'"):
        request = InferRequest([_rows("features", [1, 15])], [RequestedOutput("score")])
        check_request(request, card, 2)


def test_non_finite_values_and_repeated_outputs_are_refused() -> None:
    card = _card("fraud")
    rows = np.zeros((1, 15), np.float32)
    for bad in [np.nan, np.inf, -np.inf]:
        rows[0, 3] = bad
        tensor = Tensor("features", "FP32", (1, 15), rows.copy())
        with pytest.raises(InvalidInput, match="must be finite numbers within FP32's range"):
            check_request(InferRequest([tensor]), card, 2)
    twice = [RequestedOutput("fraud_probability")] * 2
    with pytest.raises(InvalidInput, match="requested twice"):
        check_request(InferRequest([_rows("features", [1, 15])], twice), card, 2)


def test_a_version_is_ascii_digits_or_no_version_at_all() -> None:
    assert parse_version("fraud", "") is None
    assert parse_version("fraud", "12") == 12
    for raw in ["0", "-1", "x", "\u00b2", "\u0662", "1.0"]:
        with pytest.raises(ModelNotFound, match="has no version"):
            parse_version("fraud", raw)


def test_classification_answers_score_index_label_best_first() -> None:
    card = _card("cifar10")
    probabilities = np.array([[0.1, 0.6, 0.3] + [0.0] * 7], np.float32)
    request = InferRequest([], [RequestedOutput("probabilities", True, classification=2)])
    ((tensor, binary),) = output_tensors(request, card, probabilities)
    assert binary is True and tensor.datatype == "BYTES" and tensor.shape == (1, 2)
    assert tensor.data == [b"0.600000:1:automobile", b"0.300000:2:bird"]


def test_a_fraud_score_classifies_as_genuine_or_fraud() -> None:
    card = _card("fraud")
    request = InferRequest([], [RequestedOutput("fraud_probability", classification=2)])
    ((tensor, _),) = output_tensors(request, card, np.array([[0.25]], np.float32))
    assert tensor.data == [b"0.750000:0:genuine", b"0.250000:1:fraud"]
    with pytest.raises(InvalidInput, match="classification must be 1 to 2, not 3"):
        output = RequestedOutput("fraud_probability", classification=3)
        check_request(InferRequest([_rows("features", [1, 15])], [output]), card, 2)


def test_the_configuration_says_what_triton_tools_need() -> None:
    config = model_config(_card("fraud"), max_rows=1000, max_queue_delay_ms=0.5)
    assert config["max_batch_size"] == 1000
    assert config["input"][0] | {"data_type": "TYPE_FP32", "dims": [15]} == config["input"][0]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 500}
