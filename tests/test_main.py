"""`python -m app`: settings checked at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server import running_server

pytestmark = pytest.mark.anyio


def test_invalid_settings_stop_start_up_with_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as failure, running_server(port="not-a-port"):
        pass
    assert "DEEPSERVE_PORT" in str(failure.value)
