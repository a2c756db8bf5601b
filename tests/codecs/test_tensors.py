"""The protocol's tensors: JSON data flat or nested, raw bytes, and BYTES elements."""

from __future__ import annotations

import numpy as np
import pytest

from app.codecs.tensors import (
    datatype_of,
    from_json,
    from_raw,
    pack_bytes,
    to_json_data,
    to_raw,
    unpack_bytes,
)
from app.errors import InvalidInput


def test_nested_and_flat_json_data_make_the_same_tensor() -> None:
    flat = from_json("x", "FP32", [2, 3], [1, 2, 3, 4, 5.5, 6])
    nested = from_json("x", "FP32", [2, 3], [[1, 2, 3], [4, 5.5, 6]])
    assert isinstance(flat.data, np.ndarray) and isinstance(nested.data, np.ndarray)
    assert flat.data.dtype == np.float32 and flat.data.shape == (2, 3)
    np.testing.assert_array_equal(flat.data, nested.data)
    assert to_json_data(nested) == [1.0, 2.0, 3.0, 4.0, 5.5, 6.0]


def test_raw_bytes_round_trip_for_every_numeric_datatype() -> None:
    for dtype in ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32",
                  "int64", "float16", "float32", "float64"]:  # fmt: skip
        array = np.arange(6).reshape(2, 3).astype(dtype)
        datatype = datatype_of(dtype)
        tensor = from_raw(
            "x", datatype, [2, 3], to_raw(from_json("x", datatype, [2, 3], array.tolist()))
        )
        assert isinstance(tensor.data, np.ndarray)
        np.testing.assert_array_equal(tensor.data, array)


def test_bytes_elements_are_length_prefixed() -> None:
    elements = [b"", b"a", b"\x00\xff" * 300]
    raw = pack_bytes(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:8] == b"\x01\x00\x00\x00"
    assert unpack_bytes("x", raw) == elements
    tensor = from_raw("x", "BYTES", [3, 1], raw)
    assert tensor.data == elements and to_raw(tensor) == raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x05\x00\x00\x00abc", "claims 5 bytes; only 3 are left"),
        (b"\x01\x00\x00\x00a\x02\x00", "ends inside an element's length"),
    ],
)
def test_truncated_bytes_data_is_refused_with_what_is_missing(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_raw("images", "BYTES", [1], raw)


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "message"),
    [
        ("FP32", [2, 2], [1, 2, 3], "shape \\[2, 2\\] has 4 elements; the data has 3"),
        ("FP32", [2], [[1, 2], [3]], "shape \\[2\\] has 2 elements; the data has 3"),
        ("FP32", [1], ["one"], "FP32 numbers"),
        ("FP32", [2], ["1", 2], "FP32 numbers"),
        ("FP32", [2], [None, 2], "FP32 numbers"),
        ("FP32", [2], [True, 2], "FP32 numbers"),
        ("UINT8", [1], [True], "UINT8 numbers"),
        ("INT64", [1], [2**70], "out of the range of INT64"),
        ("INT32", [1], [1.5], "INT32 numbers"),
        ("UINT8", [1], [256], "out of the range of UINT8"),
        ("INT8", [1], [-129], "out of the range of INT8"),
        ("BOOL", [1], ["yes"], "true or false"),
        ("BYTES", [1], [3], "must be strings"),
        ("BF16", [1], [1.0], "not supported"),
        ("FP32", [-1], [], "non-negative integers"),
    ],
)
def test_bad_json_data_is_refused_clearly(
    datatype: str, shape: list[int], data: list[object], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        from_json("x", datatype, shape, data)


def test_a_float_beyond_fp32_becomes_inf_for_the_model_check_to_refuse() -> None:
    tensor = from_json("x", "FP32", [1], [1e300])
    assert isinstance(tensor.data, np.ndarray) and np.isinf(tensor.data[0])


def test_raw_data_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidInput, match="8 bytes of data; shape \\[3\\] of FP32 takes 12"):
        from_raw("x", "FP32", [3], b"\x00" * 8)
