"""The versioned model repository on disk: `<root>/<name>/<version>/model.{onnx,json}`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from app.fraud.features import FEATURE_SETS
from app.model_card import ModelCard

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,8}$")


class InvalidModelCard(Exception):
    """`model.json` is missing, unreadable, or breaks the schema."""


@dataclass(frozen=True)
class VersionDir:
    name: str
    version: int
    path: Path

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"

    @property
    def card_path(self) -> Path:
        return self.path / "model.json"


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.fullmatch(name))


def discover(root: Path, names: list[str] | None = None) -> dict[str, list[VersionDir]]:
    """Every model folder under `root` (or just `names`), with its versions in ascending order.

    A name asked for but absent maps to no versions, so that it can be reported.
    """
    found: dict[str, list[VersionDir]] = {}
    if not root.is_dir():
        logger.error("model repository %s is not a directory", root)
    candidates = names if names else sorted(p.name for p in root.glob("*") if p.is_dir())
    for name in candidates:
        if not is_valid_name(name):
            logger.warning("skipping %s: not a valid model name", root / name)
            continue
        model_dir = root / name
        versions = [
            VersionDir(name, int(p.name), p)
            for p in (model_dir.iterdir() if model_dir.is_dir() else [])
            if p.is_dir() and VERSION_PATTERN.fullmatch(p.name)
        ]
        found[name] = sorted(versions, key=lambda v: v.version)
    return found


def read_card(version_dir: VersionDir) -> ModelCard:
    """Read and validate `model.json`, and check it describes the folder it lives in."""
    try:
        text = version_dir.card_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidModelCard(f"cannot read {version_dir.card_path}: {exc.strerror}") from None
    try:
        card = ModelCard.model_validate_json(text)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidModelCard(f"{version_dir.card_path} is invalid: {problems}") from None
    if card.name != version_dir.name or card.version != version_dir.version:
        raise InvalidModelCard(
            f"{version_dir.card_path} describes {card.name}/{card.version}, "
            f"but lives in {version_dir.name}/{version_dir.version}"
        )
    if not version_dir.onnx_path.is_file():
        raise InvalidModelCard(f"{version_dir.onnx_path} is missing")
    if card.reasons is not None and not (version_dir.path / card.reasons.file).is_file():
        raise InvalidModelCard(f"{version_dir.path / card.reasons.file} is missing")
    if card.fp16 is not None and not (version_dir.path / card.fp16.file).is_file():
        raise InvalidModelCard(f"{version_dir.path / card.fp16.file} is missing")
    named = card.tabular.feature_set if card.tabular else None
    if card.tabular is not None and named is not None:
        if named not in FEATURE_SETS:
            known = ", ".join(FEATURE_SETS)
            raise InvalidModelCard(
                f"{version_dir.card_path}: no feature set {named!r} (known: {known})"
            )
        if tuple(card.tabular.features) != FEATURE_SETS[named]:
            raise InvalidModelCard(
                f"{version_dir.card_path}: tabular.features are not the {named} set, in its order"
            )
    return card
