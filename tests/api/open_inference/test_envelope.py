"""What the Open Inference Protocol shares with `/v1`: API keys (as gRPC metadata too),
the admin role on the repository calls, deadlines (the gRPC deadline) and the drain."""

from __future__ import annotations

import queue
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests import model_factory
from tests.server import running_server

USER, ADMIN = "user-key-0123456789", "admin-key-0123456789"


def _features(module: Any, rows: int = 1) -> Any:
    tensor = module.InferInput("features", [rows, 15], "FP32")
    tensor.set_data_from_numpy(np.ones((rows, 15), np.float32))
    return tensor


def _tiny_repository(root: Path) -> Path:
    model_factory.image_model(root)
    model_factory.fraud_model(root)
    return root


def test_keys_and_the_admin_role_hold_on_both_transports(tmp_path: Path) -> None:
    settings = {
        "model_repository": str(_tiny_repository(tmp_path)),
        "api_keys": f"{USER},{ADMIN}:admin",
    }
    with running_server(**settings) as base:
        answer = httpx.post(f"{base}/v2/models/tiny-fraud/infer", json={"inputs": []})
        assert answer.status_code == 401 and "API key" in answer.json()["error"]
        assert httpx.get(f"{base}/v2/health/ready").status_code == 200  # probes stay open

        grpc = grpcclient.InferenceServerClient(base.grpc_target)
        assert grpc.is_server_live()  # a probe
        with pytest.raises(InferenceServerException) as failure:
            grpc.infer("tiny-fraud", [_features(grpcclient)])
        assert failure.value.status() == "StatusCode.UNAUTHENTICATED"
        user = {"authorization": f"Bearer {USER}"}
        result = grpc.infer("tiny-fraud", [_features(grpcclient)], headers=user)
        assert result.as_numpy("fraud_probability").shape == (1, 1)
        assert grpc.infer("tiny-fraud", [_features(grpcclient)], headers={"x-api-key": USER})
        with pytest.raises(InferenceServerException) as failure:
            grpc.unload_model("tiny-fraud", headers=user)
        assert failure.value.status() == "StatusCode.PERMISSION_DENIED"

        http = httpclient.InferenceServerClient(base.removeprefix("http://"))
        with pytest.raises(InferenceServerException, match="this route needs admin"):
            http.get_model_repository_index(headers={"Authorization": f"Bearer {USER}"})
        admin = {"authorization": f"Bearer {ADMIN}"}
        assert http.get_model_repository_index(headers=admin)
        grpc.unload_model("tiny-fraud", headers=admin)
        assert not grpc.is_model_ready("tiny-fraud", headers=admin)


@pytest.mark.parametrize("name", ["http", "grpc"])
def test_the_repository_calls_index_unload_and_load(tmp_path: Path, name: str) -> None:
    with running_server(model_repository=str(_tiny_repository(tmp_path))) as base:
        if name == "http":
            client: Any = httpclient.InferenceServerClient(base.removeprefix("http://"))
            index = client.get_model_repository_index()
        else:
            client = grpcclient.InferenceServerClient(base.grpc_target)
            index = client.get_model_repository_index(as_json=True)["models"]
        assert {(m["name"], m["version"], m["state"]) for m in index} == {
            ("tiny-image", "1", "READY"),
            ("tiny-fraud", "1", "READY"),
        }
        client.unload_model("tiny-fraud")
        assert not client.is_model_ready("tiny-fraud")
        with pytest.raises(InferenceServerException, match="tiny-fraud"):
            client.infer("tiny-fraud", [_features(httpclient if name == "http" else grpcclient)])
        client.load_model("tiny-fraud")
        assert client.is_model_ready("tiny-fraud")
        with pytest.raises(InferenceServerException, match="no versions of 'absent'"):
            client.load_model("absent")


def test_the_grpc_deadline_is_the_requests_deadline(tmp_path: Path) -> None:
    # One row per batch of about 0.2 s on this machine, whatever the CPU.
    _, batch_s = model_factory.calibrated_slow_fraud_model(tmp_path, 0.2, max_batch_size=1)
    with running_server(model_repository=str(tmp_path), log_level="warning") as base:
        grpc = grpcclient.InferenceServerClient(base.grpc_target)
        done: queue.Queue[Any] = queue.Queue()
        for _ in range(4):  # about 0.8 s of work queued
            grpc.async_infer(
                "slow-fraud", [_features(grpcclient)], lambda result, error: done.put(error)
            )
        time.sleep(batch_s / 2)
        # Admitted only if the queue can drain within half the deadline: a deadline of
        # about one batch is refused at once, by the server and with its reason.
        with pytest.raises(InferenceServerException) as failure:
            grpc.infer("slow-fraud", [_features(grpcclient)], client_timeout=batch_s * 1.5)
        assert failure.value.status() == "StatusCode.UNAVAILABLE"
        assert "deadline allows" in failure.value.message()
        # The same request with the server's default deadline waits its turn.
        assert grpc.infer("slow-fraud", [_features(grpcclient)]).as_numpy(
            "fraud_probability"
        ).shape == (1, 1)
        assert [done.get(timeout=30) for _ in range(4)] == [None] * 4


def test_a_call_in_flight_at_sigterm_is_answered(tmp_path: Path) -> None:
    _, batch_s = model_factory.calibrated_slow_fraud_model(tmp_path, 0.5, max_batch_size=1)
    with running_server(model_repository=str(tmp_path), log_level="warning") as base:
        grpc = grpcclient.InferenceServerClient(base.grpc_target)
        done: queue.Queue[Any] = queue.Queue()
        grpc.async_infer(
            "slow-fraud",
            [_features(grpcclient, 1)],
            lambda result, error: done.put((result, error)),
        )
        time.sleep(batch_s / 4)
        base.process.send_signal(signal.SIGTERM)
        result, error = done.get(timeout=30)
        assert error is None and result.as_numpy("fraud_probability").shape == (1, 1)
        assert base.process.wait(timeout=30) == 0
