"""A short slice of `make replay`: real transactions through HTTP into an empty history,
every served feature equal to training's offline one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import replay
from tests.server import running_server

pytestmark = pytest.mark.skipif(
    not replay.DATA.exists(), reason=f"needs the dataset at {replay.DATA}"
)


def test_a_replayed_slice_is_served_with_the_offline_features(tmp_path: Path) -> None:
    frame = replay.transactions("2018-06-01", "2018-07-15", cards=150)
    with running_server(log_level="warning", grpc_port="0") as base:
        result = replay.replay(base, frame, progress=False)
    mismatches = replay.feature_mismatches(result)
    assert mismatches.pop("checked") > 500
    assert mismatches == dict.fromkeys(mismatches, 0)
    assert len(result.served) == len(frame)
