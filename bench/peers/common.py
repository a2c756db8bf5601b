"""What both peer services need, written as a user of those frameworks would: read our
model folder, decode an image with Pillow, turn a transaction into the model's row.

Only the standard library, NumPy, Pillow and ONNX Runtime: the peers run in their own
virtual environments, next to the repository rather than installed from it.
"""

from __future__ import annotations

import io
import json
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from app.fraud.features import BEHAVIOURAL_FIELDS, FEATURES, is_night, is_weekend

MODELS = Path(__file__).resolve().parents[2] / "models"


class Model:
    """The newest version of `models/<name>/` whose inputs a client sends (not one that
    needs deepserve's history), in an ONNX Runtime session."""

    def __init__(self, name: str) -> None:
        versions = [p for p in (MODELS / name).iterdir() if p.name.isdigit()]
        cards = {p: json.loads((p / "model.json").read_text()) for p in versions}
        sendable = [p for p, card in cards.items() if _takes_sent_features(card)]
        folder = max(sendable, key=lambda p: int(p.name))
        self.card = cards[folder]
        self.session = ort.InferenceSession(
            str(folder / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name
        self.labels: list[str] = self.card["labels"]

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


def _takes_sent_features(card: dict) -> bool:
    tabular = card.get("tabular")
    return tabular is None or set(tabular["features"]) <= set(FEATURES)


def decode(data: bytes, card: dict) -> np.ndarray:
    """JPEG bytes -> uint8 `[height, width, 3]`, stretched to the model's size."""
    return decode_pil(Image.open(io.BytesIO(data)), card)


def decode_pil(image: Image.Image, card: dict) -> np.ndarray:
    size = (card["image"]["width"], card["image"]["height"])
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def top_k(probabilities: np.ndarray, labels: list[str], k: int = 5) -> list[dict]:
    best = np.argsort(probabilities)[::-1][:k]
    return [{"label": labels[i], "score": float(probabilities[i])} for i in best]


def feature_row(transaction: dict, card: dict) -> np.ndarray:
    when = datetime.fromisoformat(transaction["timestamp"])
    values = {
        "TX_AMOUNT": transaction["amount"],
        "TX_DURING_WEEKEND": float(is_weekend(when)),
        "TX_DURING_NIGHT": float(is_night(when)),
    }
    for column, field in BEHAVIOURAL_FIELDS.items():
        values[column] = transaction[field]
    return np.array([values[f] for f in card["tabular"]["features"]], dtype=np.float32)


def decision(probability: float, card: dict) -> str:
    thresholds = card["thresholds"]
    if probability >= thresholds["decline"]:
        return "decline"
    return "review" if probability >= thresholds["review"] else "approve"
