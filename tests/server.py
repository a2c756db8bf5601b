"""The service as users run it: `python -m app` in its own process, spoken to over HTTP.

The one way tests start a server. Its output goes to a file, not a pipe: a pipe nobody
reads fills up after some 300 request log lines, and the server then blocks on its next
log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer(str):
    """The server's base URL, carrying its process, its output and its gRPC address."""

    process: subprocess.Popen[bytes]
    log_path: Path
    grpc_target: str  # host:port of its gRPC service, "" when off

    @property
    def port(self) -> int:
        return int(self.rsplit(":", 1)[1])

    def output(self) -> str:
        """Everything the server has printed so far (its log)."""
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def running_server(**settings: str) -> Iterator[RunningServer]:
    """Start the server with DEEPSERVE_* settings; yield its base URL once /readyz is 200.
    gRPC listens on a free port of its own unless `grpc_port` says otherwise."""
    port = free_port()
    settings.setdefault("grpc_port", str(free_port()))
    env = {
        **os.environ,
        "DEEPSERVE_HOST": "127.0.0.1",
        "DEEPSERVE_PORT": str(port),
        **{f"DEEPSERVE_{k.upper()}": v for k, v in settings.items()},
    }
    with tempfile.TemporaryDirectory(prefix="deepserve-server-") as folder:
        env.setdefault("DEEPSERVE_STATE_DIR", str(Path(folder) / "state"))
        base = RunningServer(f"http://127.0.0.1:{port}")
        grpc_port = int(settings["grpc_port"])
        base.grpc_target = f"127.0.0.1:{grpc_port}" if grpc_port else ""
        base.log_path = Path(folder) / "server.log"
        with base.log_path.open("wb") as log:
            base.process = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_ready(base)
            yield base
        finally:
            base.process.terminate()
            try:
                base.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                base.process.kill()
                base.process.wait()


def _wait_ready(base: RunningServer, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if base.process.poll() is not None:
            raise RuntimeError(f"server exited with {base.process.returncode}:\n{base.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"server not ready in {timeout_s:.0f} s:\n{base.output()}")
        time.sleep(0.1)


async def wait_until_queued(client: httpx.AsyncClient, model: str, rows: int) -> None:
    """Return once the server's gauge shows `rows` rows queued for `model`, however long
    they take to get there on this machine (within a few seconds)."""
    for _ in range(500):
        if _queued_rows((await client.get("/metrics")).text, model) == rows:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{rows} rows of {model} never were all queued at once")


def _queued_rows(metrics: str, model: str) -> float:
    for family in text_string_to_metric_families(metrics):
        for sample in family.samples:
            if sample.name == "deepserve_queue_rows" and sample.labels["model"] == model:
                return sample.value
    return 0.0
