"""A short slice of `make replay`: real transactions through HTTP into an empty history,
every served feature equal to training's offline one."""

from __future__ import annotations

import pytest

from bench import replay
from tests.redis_server import MISSING, redis_installed

pytestmark = pytest.mark.skipif(
    not replay.DATA.exists(), reason=f"needs the dataset at {replay.DATA}"
)


@pytest.mark.parametrize("store", ["embedded", "redis"])
def test_a_replayed_slice_is_served_with_the_offline_features(store: str) -> None:
    if store == "redis" and not redis_installed():
        pytest.skip(MISSING)
    frame = replay.transactions("2018-06-01", "2018-07-15", cards=150)
    with replay.serving(store) as base:
        result = replay.replay(base, frame, progress=False)
    mismatches = replay.feature_mismatches(result)
    assert mismatches.pop("checked") > 500
    assert mismatches == dict.fromkeys(mismatches, 0)
    assert len(result.served) == len(frame)
