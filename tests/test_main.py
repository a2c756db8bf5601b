"""`python -m app`: settings checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import encoded_image, transaction
from tests.server import running_server

pytestmark = pytest.mark.anyio


def test_invalid_settings_stop_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failure, running_server(port="not-a-port"):
        pass
    assert "DEEPSERVE_PORT" in str(failure.value)


def test_an_app_serves_again_after_its_lifespan_ends(make_client) -> None:
    from fastapi.testclient import TestClient

    from app.api.services import services_of

    first = make_client()
    app = first.app
    assert first.post("/v1/fraud/score", json=transaction()).status_code == 200
    first.__exit__(None, None, None)  # the lifespan ends: sessions and threads released
    with TestClient(app) as again:
        again.portal.call(services_of(app).registry.wait_loaded)  # type: ignore[arg-type]
        assert again.post("/v1/fraud/score", json=transaction()).status_code == 200
        image = {"content": encoded_image((200, 0, 0)), "headers": {"content-type": "image/png"}}
        many = {"files": [("file", ("a.png", encoded_image((9, 9, 9), (64, 64)), "image/png"))] * 8}
        assert again.post("/v1/classify", **image).status_code == 200
        assert again.post("/v1/classify", **many).status_code == 200  # through the decode threads
