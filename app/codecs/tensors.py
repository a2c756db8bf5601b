"""Tensors as the Open Inference Protocol writes them: datatypes, JSON data (flat or
nested), raw little-endian bytes, and BYTES elements as 4-byte lengths then the bytes.

Shared by the protocol's REST and gRPC front ends; nothing here knows either.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import InvalidInput

# The protocol's datatypes and the numpy types they are on the wire (little-endian).
NUMPY_BY_DATATYPE: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
BYTES = "BYTES"
DATATYPES = (*NUMPY_BY_DATATYPE, BYTES)

_DATATYPE_BY_NAME = {dtype.name: name for name, dtype in NUMPY_BY_DATATYPE.items()}
_LENGTH = struct.Struct("<I")


def datatype_of(dtype: str | np.dtype[Any]) -> str:
    """The protocol's name for a numpy type (`float32` -> `FP32`)."""
    return _DATATYPE_BY_NAME[np.dtype(dtype).name]


@dataclass(slots=True)  # one per request: a frozen dataclass costs twice as much to build
class Tensor:
    """One named tensor: numeric data as a numpy array of its shape, BYTES as a flat list."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray | list[bytes]


def element_count(name: str, shape: list[int] | tuple[int, ...]) -> int:
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise InvalidInput(f"input {name!r}: shape {list(shape)} must be non-negative integers")
    return math.prod(shape)


def check_datatype(name: str, datatype: str) -> None:
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"input {name!r}: datatype {datatype!r} is not supported; use one of "
            + ", ".join(DATATYPES)
        )


def from_json(name: str, datatype: str, shape: list[int], data: Any) -> Tensor:
    """A tensor from the JSON `data` of a request, flat or nested in row-major order (or
    from gRPC's typed contents, which are flat lists). Non-finite floats pass here: whether
    they are acceptable is the model's business (`app.codecs.open_inference`)."""
    check_datatype(name, datatype)
    count = element_count(name, shape)
    if not isinstance(data, list):
        data = [data]  # the protocol allows a lone element for a one-element tensor
    if len(data) > count:  # a flat list too long: refused before any copy of it
        raise _count_mismatch(name, shape, count, len(data))
    elements = _flatten(data)
    if len(elements) != count:
        raise _count_mismatch(name, shape, count, len(elements))
    if datatype == BYTES:
        return Tensor(name, datatype, tuple(shape), [_bytes_element(name, e) for e in elements])
    dtype = NUMPY_BY_DATATYPE[datatype]
    # JSON's own types only: no strings or nulls that numpy would read as numbers.
    allowed = (bool,) if dtype.kind == "b" else (int, float) if dtype.kind == "f" else (int,)
    if not all(type(e) in allowed for e in elements):
        expected = "true or false" if dtype.kind == "b" else f"{datatype} numbers"
        raise InvalidInput(f"input {name!r}: data must be {expected}")
    try:
        with np.errstate(over="ignore"):  # a float beyond FP32 becomes inf: refused later
            array = np.array(elements, dtype=dtype)
    except OverflowError:  # an integer out of its type's range
        raise InvalidInput(f"input {name!r}: a value is out of the range of {datatype}") from None
    return Tensor(name, datatype, tuple(shape), array.reshape(shape))


def from_raw(name: str, datatype: str, shape: list[int], raw: bytes | memoryview) -> Tensor:
    """A tensor from its raw bytes (the binary extension, gRPC's `raw_input_contents`)."""
    check_datatype(name, datatype)
    count = element_count(name, shape)
    if datatype == BYTES:
        elements = unpack_bytes(name, raw)
        if len(elements) != count:
            raise _count_mismatch(name, shape, count, len(elements))
        return Tensor(name, datatype, tuple(shape), elements)
    dtype = NUMPY_BY_DATATYPE[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"input {name!r}: {len(raw)} bytes of data; shape {list(shape)} of {datatype} "
            f"takes {count * dtype.itemsize}"
        )
    return Tensor(name, datatype, tuple(shape), np.frombuffer(raw, dtype).reshape(shape))


def unpack_bytes(name: str, raw: bytes | memoryview) -> list[bytes]:
    """BYTES elements: each a 4-byte little-endian length, then that many bytes."""
    view = memoryview(raw)
    elements, offset, end = [], 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise InvalidInput(f"input {name!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInput(
                f"input {name!r}: a BYTES element claims {length} bytes; "
                f"only {end - offset} are left"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def all_finite(array: np.ndarray) -> bool:
    """Whether every element is a finite number; for a few elements, Python floats are
    checked in half of numpy's call overhead."""
    if array.size <= 64:
        return all(map(math.isfinite, array.ravel().tolist()))
    return bool(np.isfinite(array).all())


def pack_bytes(elements: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(e)) + e for e in elements)


def to_raw(tensor: Tensor) -> bytes:
    """The tensor's raw bytes, as the binary extension and gRPC send them."""
    if isinstance(tensor.data, list):
        return pack_bytes(tensor.data)
    return np.ascontiguousarray(tensor.data, NUMPY_BY_DATATYPE[tensor.datatype]).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """The tensor's elements as a flat JSON list (BYTES as text)."""
    if isinstance(tensor.data, list):
        return [e.decode("utf-8", "replace") for e in tensor.data]
    return tensor.data.reshape(-1).tolist()


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _bytes_element(name: str, element: Any) -> bytes:
    if isinstance(element, bytes):  # gRPC's typed contents
        return element
    if not isinstance(element, str):
        raise InvalidInput(f"input {name!r}: BYTES data in JSON must be strings")
    return element.encode()


def _count_mismatch(
    name: str, shape: list[int] | tuple[int, ...], want: int, got: int
) -> Exception:
    return InvalidInput(
        f"input {name!r}: shape {list(shape)} has {want} elements; the data has {got}"
    )
