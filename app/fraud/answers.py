"""The answer a recorded payment got, kept so that a retry of it gets the same one: its
probability, its decision and its model inputs (all that the history computes), packed in
169 bytes rather than the ~850 of its JSON (the answer is written for every payment; its
size is most of the write's cost)."""

from __future__ import annotations

import struct
from typing import Any, get_args

import orjson

from app.fraud.decisions import Decision
from app.fraud.features import FEATURE_NAMES

DECISIONS: tuple[Decision, ...] = get_args(Decision)
_HEAD = struct.Struct("<Bd")  # decision, probability; then the inputs, 8 bytes each
_INPUTS = struct.Struct(f"<{len(FEATURE_NAMES)}d")
_FROZEN = 0x80  # in the decision's byte: declined because the card was frozen


def pack_answer(
    probability: float, decision: Decision, inputs: list[float], frozen: bool = False
) -> bytes:
    head = _HEAD.pack(DECISIONS.index(decision) | (_FROZEN * frozen), probability)
    return head + _INPUTS.pack(*inputs)


def was_frozen(packed: bytes) -> bool:
    """Whether the answer declined the payment because its card was frozen."""
    return packed[:1] != b"{" and bool(packed[0] & _FROZEN)


def unpack_answer(transaction_id: Any, packed: bytes) -> dict[str, Any]:
    """The answer as the API gives it, features included."""
    if packed[:1] == b"{":  # kept as JSON by an earlier version
        return orjson.loads(packed)  # type: ignore[no-any-return]
    decision, probability = _HEAD.unpack_from(packed)
    # Fewer inputs where an earlier version kept the answer (15, or 17).
    inputs = struct.unpack_from(f"<{(len(packed) - _HEAD.size) // 8}d", packed, _HEAD.size)
    return {
        "transaction_id": transaction_id,
        "fraud_probability": probability,
        "decision": DECISIONS[decision & ~_FROZEN],
        "features": dict(zip(FEATURE_NAMES.values(), inputs, strict=False)),
    }
