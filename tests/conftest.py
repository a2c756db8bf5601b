from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api.services import services_of
from app.main import create_app
from app.settings import Settings
from tests import model_factory
from tests.redis_server import MISSING, RedisServer, redis_installed, redis_server

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def model_repo(tmp_path: Path) -> Path:
    """A repository with one tiny image model and one tiny fraud model."""
    root = tmp_path / "models"
    model_factory.image_model(root)
    model_factory.fraud_model(root)
    return root


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(model_repo: Path, tmp_path: Path) -> Iterator[ClientFactory]:
    """Start the real app (lifespan included) and wait until model loading has finished."""
    clients: list[TestClient] = []

    def start(repo: Path | None = None, **overrides: Any) -> TestClient:
        values: dict[str, Any] = {
            "model_repository": repo or model_repo,
            "default_image_model": "tiny-image",
            "default_fraud_model": "tiny-fraud",
            "grpc_port": 0,  # in-process apps speak HTTP; gRPC tests start a real server
            "state_dir": tmp_path / "state",
        }
        settings = Settings(_env_file=None, **{**values, **overrides})
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        client.portal.call(services_of(client.app).registry.wait_loaded)  # type: ignore[arg-type]
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: ClientFactory) -> TestClient:
    return make_client()


def encoded_image(
    colour: tuple[int, ...] | str,
    size: tuple[int, int] = (16, 16),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def transaction(**changes: Any) -> dict[str, Any]:
    """A valid transaction body; keyword arguments change or add fields."""
    body: dict[str, Any] = {
        "transaction_id": "tx-1",
        "customer_id": 17,
        "terminal_id": 4242,
        "amount": 50.0,
        "timestamp": "2018-09-12T14:30:00",
        "customer_nb_tx_1d": 2,
        "customer_nb_tx_7d": 9,
        "customer_nb_tx_30d": 31,
        "customer_avg_amount_1d": 48.5,
        "customer_avg_amount_7d": 52.0,
        "customer_avg_amount_30d": 51.2,
        "terminal_nb_tx_1d": 5,
        "terminal_nb_tx_7d": 40,
        "terminal_nb_tx_30d": 160,
        "terminal_risk_1d": 0.0,
        "terminal_risk_7d": 0.0,
        "terminal_risk_30d": 0.0,
    }
    body.update(changes)
    return body


@pytest.fixture(scope="session")
def redis_session() -> Iterator[RedisServer]:
    """One real redis-server for the whole run; `redis_url` empties it for each test."""
    if not redis_installed():
        pytest.skip(MISSING)
    with redis_server() as server:
        yield server


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    redis_session.flush()
    return redis_session.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own, not started: to start, stop and kill. Its append-only
    file is fsynced at every write, so that a kill loses nothing acknowledged."""
    if not redis_installed():
        pytest.skip(MISSING)
    server = RedisServer(tmp_path, appendfsync="always")
    yield server
    server.stop()
