"""The service as users run it: `python -m app` in its own process, spoken to over HTTP."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.loadgen import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


class RunningServer(str):
    """The server's base URL, carrying its process."""

    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def running_server(**settings: str) -> Iterator[RunningServer]:
    """Start the server with DEEPSERVE_* settings; yield its base URL once /readyz is 200."""
    port = free_port()
    env = {
        **os.environ,
        "DEEPSERVE_HOST": "127.0.0.1",
        "DEEPSERVE_PORT": str(port),
        **{f"DEEPSERVE_{k.upper()}": v for k, v in settings.items()},
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = RunningServer(f"http://127.0.0.1:{port}")
    base.process = process
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode() if process.stdout else ""
                raise RuntimeError(f"server exited with {process.returncode}:\n{output}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("server not ready in 60 s")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
