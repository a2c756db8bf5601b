"""The two decoders of the transaction contract: msgspec's against pydantic's, which defines
the API.

The decoder may decline any body (pydantic then judges it), but what it accepts pydantic
must accept, with the same identifiers and the same model inputs, bit for bit.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.codecs.transaction_schema import FIELDS, Transaction, WireTransaction
from app.codecs.transactions import TransactionRows, decode_by_pydantic, decode_well_formed
from tests.conftest import transaction

DATA = Path(__file__).resolve().parents[1] / "data"


def _by_pydantic(body: bytes) -> TransactionRows | None:
    try:
        return decode_by_pydantic(body)
    except ValidationError:
        return None


def _assert_agrees(body: bytes) -> TransactionRows | None:
    fast = decode_well_formed(body)
    if fast is not None:
        slow = _by_pydantic(body)
        assert slow is not None, f"accepted a body pydantic refuses: {body[:300]!r}"
        assert fast.ids == slow.ids
        assert [type(i) for i in fast.ids] == [type(i) for i in slow.ids]
        assert fast.features.dtype == slow.features.dtype == np.float32
        np.testing.assert_array_equal(fast.features, slow.features)
    return fast


def test_both_decoders_are_made_from_the_one_contract() -> None:
    assert list(WireTransaction.__struct_fields__) == list(FIELDS)
    assert list(Transaction.model_fields) == list(FIELDS)
    assert list(FIELDS) == list(transaction())


@pytest.mark.parametrize("name", ["transaction.json", "transactions.json"])
def test_well_formed_bodies_are_read_as_pydantic_reads_them(name: str) -> None:
    body = (DATA / name).read_bytes()
    assert _assert_agrees(body) is not None


def test_a_batch_of_real_shape_is_read() -> None:
    rows = [
        transaction(
            transaction_id=i if i % 2 else f"tx-{i}",
            amount=i * 7.31,
            timestamp=f"2018-09-{1 + i % 28:02d}T{i % 24:02d}:{i % 60:02d}:07",
            terminal_risk_7d=(i % 10) / 10,
            customer_nb_tx_30d=i,
        )
        for i in range(100)
    ]
    read = _assert_agrees(orjson.dumps({"transactions": rows}))
    assert read is not None and len(read) == 100
    weekend = read.features[:, 1]  # 2018-09-01 was a Saturday
    assert weekend[0] == 1 and weekend[2] == 0 and weekend[7] == 1


REFUSED_BY_BOTH = {
    "number as a string": {"amount": "50.0"},
    "count as a float": {"customer_nb_tx_1d": 2.0},
    "boolean amount": {"amount": True},
    "boolean count": {"terminal_nb_tx_1d": False},
    "boolean risk": {"terminal_risk_7d": True},
    "boolean identifier": {"customer_id": True},
    "number timestamp": {"timestamp": 1536762600},
    "empty identifier": {"transaction_id": ""},
    "identifier of 65 characters": {"terminal_id": "t" * 65},
    "identifier of 10 MB": {"transaction_id": "x" * 10_000_000},
    "timestamp of 80 characters": {"timestamp": "2018-09-12T14:30:00." + "1" * 60},
}


@pytest.mark.parametrize("changes", REFUSED_BY_BOTH.values(), ids=REFUSED_BY_BOTH.keys())
def test_types_are_strict_and_strings_bounded_in_both_decoders(changes: dict[str, Any]) -> None:
    body = orjson.dumps(transaction(**changes))
    assert decode_well_formed(body) is None
    with pytest.raises(ValidationError):
        decode_by_pydantic(body)


def test_an_identifier_of_64_characters_is_read_by_both() -> None:
    body = orjson.dumps(transaction(transaction_id="t" * 64))
    read = _assert_agrees(body)
    assert read is not None and read.ids == ["t" * 64]


LEFT_TO_PYDANTIC = {
    "timestamp with Z": {"timestamp": "2018-09-12T14:30:00Z"},
    "timestamp with a fraction": {"timestamp": "2018-09-12T06:59:59.9999999"},
    "timestamp with a space": {"timestamp": "2018-09-12 14:30:00"},
    "30 February": {"timestamp": "2018-02-30T14:30:00"},
    "29 February, not a leap year": {"timestamp": "2019-02-29T14:30:00"},
    "hour 24": {"timestamp": "2018-09-12T24:00:00"},
    "leap second": {"timestamp": "2018-09-12T23:59:60"},
    "year 0": {"timestamp": "0000-09-12T14:30:00"},
    "week date": {"timestamp": "2018-W37-3T14:30:0"},
    "65-bit identifier": {"customer_id": 2**63},
    "float identifier": {"terminal_id": 1.5},
    "negative count": {"terminal_nb_tx_7d": -1},
    "risk above 1": {"terminal_risk_1d": 1.5},
    "extra field": {"note": "x"},
    "null": {"amount": None},
}


@pytest.mark.parametrize("changes", LEFT_TO_PYDANTIC.values(), ids=LEFT_TO_PYDANTIC.keys())
def test_anything_unusual_is_left_to_pydantic(changes: dict[str, Any]) -> None:
    body = orjson.dumps(transaction(**changes))
    assert decode_well_formed(body) is None


def test_29_february_of_a_leap_year_is_read() -> None:
    body = orjson.dumps(transaction(timestamp="2020-02-29T14:30:00"))
    assert _assert_agrees(body) is not None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b'{"transactions": []}',
        b'{"transactions": {}}',
        b'{"transactions": [1]}',
        b"{" + b'"amount": 1.0, ' * 2 + b"}",
        json.dumps({**transaction(), "customer_id": "transactions"}).encode(),
        json.dumps(transaction()).encode().replace(b"}", b', "amount": 60.0}'),  # a repeat
        json.dumps(transaction()).encode().replace(b"tx-1", b"tx-\xed\xa0\x80"),  # not UTF-8
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_odd_bodies_agree_or_are_declined(body: bytes) -> None:
    _assert_agrees(body)


_NUMBER_LIKE = st.one_of(
    st.integers(min_value=-5, max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.sampled_from([0, 1, 0.0, 1.0, 1e9, 1e9 + 1, 10_000_000, 10_000_001, 2.5, -0.0]),
    st.booleans(),
    st.none(),
    st.sampled_from(["1", "2.5", "nan", ""]),
)
_IDENTIFIER_LIKE = st.one_of(
    st.text(max_size=8),
    st.text(min_size=60, max_size=70),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
_TIMESTAMP_LIKE = st.one_of(
    st.datetimes().map(lambda d: d.isoformat(timespec="seconds")),
    st.datetimes().map(lambda d: d.isoformat()),
    st.builds(
        lambda y, mo, d, h, mi, s: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}",
        st.integers(0, 9999),
        st.integers(0, 13),
        st.integers(0, 32),
        st.integers(0, 25),
        st.integers(0, 61),
        st.integers(0, 61),
    ),
    st.text(max_size=20),
    st.integers(),
)


_VALID = {
    "id": st.one_of(
        st.text(min_size=1, max_size=8), st.integers(min_value=-(2**63), max_value=2**63 - 1)
    ),
    "timestamp": st.datetimes().map(lambda d: d.isoformat(timespec="seconds")),
    "amount": st.one_of(st.floats(0, 1e9), st.integers(0, 10**9)),
    "count": st.one_of(st.integers(0, 10_000_000), st.integers(0, 100)),
    "risk": st.one_of(st.floats(0, 1), st.sampled_from([0, 1])),
}


def _kind(name: str) -> str:
    if name.endswith("_id"):
        return "id"
    if name == "timestamp":
        return name
    return "count" if "_nb_tx_" in name else "risk" if "_risk_" in name else "amount"


@st.composite
def _transactions(draw: st.DrawFn) -> dict[str, Any]:
    """A valid transaction of random values, then perhaps a field or two changed to
    anything of a nearby kind, or one removed."""
    fields = {name: draw(_VALID[_kind(name)]) for name in transaction()}
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        name = draw(st.sampled_from(sorted(fields)))
        nearby = {"id": _IDENTIFIER_LIKE, "timestamp": _TIMESTAMP_LIKE}
        fields[name] = draw(nearby.get(_kind(name), _NUMBER_LIKE))
    if draw(st.integers(0, 20)) == 0:
        del fields[draw(st.sampled_from(sorted(fields)))]
    return fields


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_transactions(), min_size=1, max_size=5), st.booleans())
def test_generated_bodies_agree_with_pydantic(rows: list[dict[str, Any]], batch: bool) -> None:
    document = {"transactions": rows} if batch or len(rows) > 1 else rows[0]
    _assert_agrees(json.dumps(document).encode())


def test_mutated_bodies_agree_or_are_declined_and_never_raise() -> None:
    """Bytes changed, inserted and deleted at random in valid bodies: broken JSON, odd
    numbers, cut strings. Seeded, so a failure repeats."""
    valid = [
        json.dumps(transaction()).encode(),
        json.dumps(
            {"transactions": [transaction(), transaction(timestamp="2020-02-29T06:59:59")]}
        ).encode(),
    ]
    alphabet = [*b'0123456789{}[]":,.-eE+ \\tnulrfsaTZ', 0xFF, 0xED, 0xA0, 0x80, 0x00]
    rng = random.Random(0)
    read = 0
    for _ in range(3000):
        body = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 3)):
            position, roll = rng.randrange(len(body)), rng.random()
            if roll < 0.5:
                body[position] = rng.choice(alphabet)
            elif roll < 0.75:
                body.insert(position, rng.choice(alphabet))
            else:
                del body[position]
        read += _assert_agrees(bytes(body)) is not None
    assert read > 0  # some mutations leave a valid body (a digit for a digit)
