"""A kept answer comes back as it was given: probability and inputs to the last bit."""

from __future__ import annotations

import struct

import orjson

from app.fraud.answers import pack_answer, unpack_answer, was_frozen
from app.fraud.features import FEATURE_NAMES


def test_an_answer_packs_small_and_unpacks_exactly() -> None:
    inputs = [57.23, 0.0, 1.0, 1, 57.23, 3, 40.1 / 3, 9, 1 / 3, 0, 0.0, 4, 0.25, 17, 2 / 17]
    inputs += [57.23 / (40.1 / 3), 1, 12.5, 8.25, 2 / 3]
    packed = pack_answer(0.1 + 0.2, "review", inputs)
    assert len(packed) < 170
    answer = unpack_answer("tx-9", packed)
    assert answer["transaction_id"] == "tx-9" and answer["decision"] == "review"
    assert answer["fraud_probability"] == 0.1 + 0.2
    assert list(answer["features"]) == list(FEATURE_NAMES.values())
    assert list(answer["features"].values()) == inputs
    assert not was_frozen(packed)


def test_an_answer_kept_with_the_benchmarks_inputs_alone_reads_back() -> None:
    """As an earlier version packed it, before the history's own features."""
    inputs = [float(i) for i in range(15)]
    packed = struct.pack("<Bd15d", 1, 0.75, *inputs)
    answer = unpack_answer(4, packed)
    assert answer["decision"] == "review" and answer["fraud_probability"] == 0.75
    assert list(answer["features"].values()) == inputs
    assert list(answer["features"]) == list(FEATURE_NAMES.values())[:15]


def test_an_answer_kept_with_the_card_history_features_alone_reads_back() -> None:
    """As a version that knew 17 inputs packed it."""
    inputs = [float(i) for i in range(17)]
    answer = unpack_answer(5, struct.pack("<Bd17d", 0, 0.125, *inputs))
    assert list(answer["features"].values()) == inputs
    assert list(answer["features"]) == list(FEATURE_NAMES.values())[:17]


def test_a_frozen_cards_decline_is_kept_as_such() -> None:
    packed = pack_answer(0.01, "decline", [0.0] * len(FEATURE_NAMES), frozen=True)
    assert was_frozen(packed)
    assert unpack_answer(3, packed)["decision"] == "decline"


def test_an_answer_kept_as_json_reads_back() -> None:
    kept = {"transaction_id": 1, "fraud_probability": 0.5, "decision": "approve"}
    assert unpack_answer(1, orjson.dumps(kept)) == kept
    assert not was_frozen(orjson.dumps(kept))
