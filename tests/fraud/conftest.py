"""The two history stores, each real, for the suites that must hold for both."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from app.fraud.history.embedded import EmbeddedHistory
from app.fraud.history.redis_store import RedisHistory
from app.fraud.history.store import HistoryStore

StoreFactory = Callable[[], Awaitable[HistoryStore]]


@pytest.fixture(params=["embedded", "redis"])
async def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens a store on the same history each time it is called (a restart)."""
    opened: list[HistoryStore] = []
    url = request.getfixturevalue("redis_url") if request.param == "redis" else ""

    async def make() -> HistoryStore:
        store: HistoryStore = RedisHistory(url) if url else EmbeddedHistory(tmp_path / "history.db")
        await store.open()
        opened.append(store)
        return store

    yield make
    for store in opened:
        await store.close()
