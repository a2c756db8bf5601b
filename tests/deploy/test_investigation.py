"""A short slice of `make investigate`: real payments through HTTP, a simulated team
resolving the highest-scored alerts each day through the API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import investigation, replay

pytestmark = pytest.mark.skipif(
    not replay.DATA.exists(), reason=f"needs the dataset at {replay.DATA}"
)


def test_a_simulated_team_catches_fraud_and_the_history_stays_exact(tmp_path: Path) -> None:
    slice_ = ["--cards", "1500", "--days", "3", "--team", "5", "--reissue-after", "1"]
    stem = investigation.main([*slice_, "--out", str(tmp_path)])
    report = json.loads(stem.with_suffix(".json").read_text())
    (week,) = report["weeks"]
    assert week["investigated"] == 15  # five a day: the queue never ran dry
    assert 0 < week["caught"] <= week["investigated"]
    assert week["label_mismatches"] == 0  # a confirmed card's labels show at once
    assert week["genuine_frozen"] == 0  # only alerts found fraud froze a card
    mismatches = report["feature_mismatches"]
    assert mismatches.pop("checked") == report["payments_replayed"] > 5000
    assert mismatches == dict.fromkeys(mismatches, 0)
    assert stem.with_suffix(".png").stat().st_size > 10_000
