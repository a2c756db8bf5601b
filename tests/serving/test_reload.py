"""Hot reload: new versions swap in once warm, failed ones leave the current one serving,
removed or unloaded ones stop serving; admin routes need an admin key."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.api.services import services_of
from tests import model_factory
from tests.conftest import ClientFactory, transaction
from tests.server import running_server

ADMIN, USER = "a" * 20, "u" * 20


def wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def served_version(client) -> int:
    return client.post("/v1/fraud/score", json=transaction()).json()["version"]


def count_polls(client, monkeypatch) -> list[None]:
    """A list that grows by one as each poll of the model repository from now on ends."""
    registry = services_of(client.app).registry
    scan = registry.sync
    polls: list[None] = []

    async def counted(names: list[str] | None = None) -> None:
        await scan(names)
        if names is None:  # a poll, not an admin load
            polls.append(None)

    monkeypatch.setattr(registry, "sync", counted)
    return polls


def test_a_new_version_is_picked_up_and_the_old_one_released(model_repo, make_client) -> None:
    client = make_client(poll_interval_s=0.1, keep_versions=1)
    assert served_version(client) == 1
    model_factory.fraud_model(model_repo, version=2, amount_weight=0.0)
    wait_for(lambda: served_version(client) == 2)
    wait_for(
        lambda: (
            [v["version"] for v in client.get("/v1/models/tiny-fraud").json()["versions"]] == [2]
        )
    )
    assert client.post("/v1/fraud/score?version=1", json=transaction()).status_code == 404
    assert client.get("/readyz").status_code == 200


def test_a_version_that_fails_to_load_leaves_the_current_one_serving(
    model_repo, make_client
) -> None:
    client = make_client(poll_interval_s=0.1)
    broken = model_repo / "tiny-fraud" / "2"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    wait_for(lambda: len(client.get("/v1/models/tiny-fraud").json()["versions"]) == 2)
    versions = {v["version"]: v for v in client.get("/v1/models/tiny-fraud").json()["versions"]}
    assert versions[2]["state"] == "failed" and "invalid" in versions[2]["reason"]
    assert served_version(client) == 1
    assert client.get("/readyz").status_code == 200


def test_a_removed_version_stops_serving(model_repo, make_client) -> None:
    model_factory.fraud_model(model_repo, version=2)
    client = make_client(poll_interval_s=0.1)
    assert served_version(client) == 2
    shutil.rmtree(model_repo / "tiny-fraud" / "2")
    wait_for(lambda: served_version(client) == 1)


def test_admin_routes_unload_and_load_and_need_an_admin_key(
    model_repo, make_client, monkeypatch
) -> None:
    model_factory.fraud_model(model_repo, version=2)
    client = make_client(poll_interval_s=0.1, api_keys=[f"{ADMIN}:admin", USER])
    admin, user = {"X-API-Key": ADMIN}, {"X-API-Key": USER}
    assert client.post("/v1/models/tiny-fraud/unload").status_code == 401
    assert client.post("/v1/models/tiny-fraud/unload", headers=user).status_code == 403
    response = client.post("/v1/models/tiny-fraud/unload?version=2", headers=admin)
    assert response.json() == {"model": "tiny-fraud", "unloaded": [2]}
    polls = count_polls(client, monkeypatch)
    wait_for(lambda: len(polls) >= 3)  # several polls: an unloaded version stays unloaded
    score = client.post("/v1/fraud/score", json=transaction(), headers=user)
    assert score.json()["version"] == 1
    loaded = client.post("/v1/models/tiny-fraud/load", headers=admin).json()
    assert [v["version"] for v in loaded["versions"]] == [1, 2]
    assert client.post("/v1/fraud/score", json=transaction(), headers=user).json()["version"] == 2
    assert client.post("/v1/models/nope/load", headers=admin).status_code == 404


@pytest.mark.anyio
async def test_requests_during_a_hot_swap_all_succeed(tmp_path: Path) -> None:
    model_factory.fraud_model(tmp_path, max_queue_delay_ms=2)
    with running_server(
        model_repository=str(tmp_path),
        poll_interval_s="0.05",
        keep_versions="1",
        log_level="warning",
    ) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            versions: list[int] = []
            statuses: list[int] = []

            async def hammer(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    response = await client.post("/v1/models/tiny-fraud/score", json=transaction())
                    statuses.append(response.status_code)
                    if response.status_code == 200:
                        versions.append(response.json()["version"])

            stop = asyncio.Event()
            workers = [asyncio.ensure_future(hammer(stop)) for _ in range(16)]
            await asyncio.sleep(0.5)
            model_factory.fraud_model(tmp_path, version=2)
            for _ in range(200):
                await asyncio.sleep(0.05)
                if versions and versions[-1] == 2:
                    break
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*workers)
    assert set(statuses) == {200}, f"{len(statuses)} requests: {sorted(set(statuses))}"
    assert versions[0] == 1 and versions[-1] == 2


def test_load_retries_a_version_that_failed(model_repo, make_client) -> None:
    broken = model_repo / "tiny-fraud" / "2"
    broken.mkdir()
    (broken / "model.json").write_text("{}")
    client = make_client(poll_interval_s=0)
    assert served_version(client) == 1
    shutil.rmtree(broken)
    model_factory.fraud_model(model_repo, version=2)  # the files are fixed in place
    loaded = client.post("/v1/models/tiny-fraud/load").json()
    assert [v["state"] for v in loaded["versions"]] == ["ready", "ready"]
    assert served_version(client) == 2


def test_a_version_seen_half_copied_loads_once_its_files_are_complete(
    model_repo: Path, make_client: ClientFactory
) -> None:
    client = make_client(poll_interval_s=0.05)
    half = model_repo / "tiny-fraud" / "2"
    half.mkdir()
    (half / "model.json").write_text('{"name": "tiny-fr')  # the copy has only begun
    wait_for(lambda: _state(client, 2) == "failed")
    model_factory.fraud_model(model_repo, version=2)  # the copy completes
    wait_for(lambda: _state(client, 2) == "ready")
    assert served_version(client) == 2


def _state(client: TestClient, version: int) -> str | None:
    versions = client.get("/v1/models/tiny-fraud").json()["versions"]
    return next((v["state"] for v in versions if v["version"] == version), None)
