"""The servers the benchmark compares, each started on 127.0.0.1 and stopped after its turn.

Peers run from their own virtual environments under `bench/.venvs/` (or `$BENCH_VENVS`),
created on first use; they are not dependencies of the project. So does Triton's
perf_analyzer (`bench/perf_analyzer.py`), a load generator rather than a server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from bench.procs import free_port, rss_mb

ROOT = Path(__file__).resolve().parents[1]
VENVS = Path(os.environ.get("BENCH_VENVS", ROOT / "bench" / ".venvs"))

# Peer environments: what each installs (pinned for comparable reruns).
PEER_PACKAGES = {
    "ray": [
        "ray[serve]==2.60.0",
        "python-multipart",
        f"onnxruntime=={ort.__version__}",
        "pillow",
        "numpy",
    ],
    "bentoml": ["bentoml==1.4.39", f"onnxruntime=={ort.__version__}", "pillow", "numpy"],
    "litserve": ["litserve==0.2.19", f"onnxruntime=={ort.__version__}", "pillow", "numpy"],
    # uvloop 0.22 and later make MLServer 1.7's inference workers fail at start ("There is
    # no current event loop"): the release before them.
    "mlserver": [
        "mlserver==1.7.1",
        "uvloop<0.22",
        f"onnxruntime=={ort.__version__}",
        "pillow",
        "numpy",
    ],
    # PyTriton bundles the Triton server; see `bench/peers/pytriton_app.py` for why its
    # environment is made from Debian's Python 3.11 (`PEER_INTERPRETERS`).
    "triton": ["nvidia-pytriton==0.7.0", f"onnxruntime=={ort.__version__}", "pillow", "numpy"],
    # The binary ships in the tritonclient wheel; 2.52 and later need glibc 2.38. It links
    # libcudart even on CPU (this package) and libb64 (Debian's libb64-0d).
    "perf-analyzer": ["tritonclient==2.50.0", "nvidia-cuda-runtime-cu12"],
}


# Interpreters other than this one that a peer's environment must be made from.
PEER_INTERPRETERS = {"triton": "/usr/bin/python3.11"}


@dataclass(frozen=True)
class System:
    name: str
    style: str  # request format: "deepserve", "bentoml", "litserve", "mlserver" or "triton"
    workloads: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


SYSTEMS = {
    s.name: s
    for s in (
        System("deepserve", "deepserve", ("image-1", "image-16", "fraud-1", "fraud-100")),
        # Batching off, for the batching gain.
        System(
            "deepserve-unbatched",
            "deepserve",
            ("image-1", "fraud-1"),
            {"DEEPSERVE_MAX_BATCH_SIZE": "1"},
        ),
        System("fastapi-noop", "deepserve", ("fraud-1",)),
        System("fastapi-noop-lean", "deepserve", ("fraud-1",)),
        System("ray-serve", "deepserve", ("image-1", "image-16", "fraud-1", "fraud-100")),
        System("bentoml", "bentoml", ("image-1", "image-16", "fraud-1", "fraud-100")),
        System("litserve", "litserve", ("image-1", "image-16", "fraud-1", "fraud-100")),
        System("mlserver", "mlserver", ("image-1", "image-16", "fraud-1", "fraud-100")),
        System("triton", "triton", ("image-1", "image-16", "fraud-1", "fraud-100")),
    )
}


# The other serving systems, compared at the peer concurrency levels.
PEERS = ("ray-serve", "bentoml", "litserve", "mlserver", "triton")


@dataclass
class Running:
    system: System
    process: subprocess.Popen[bytes]
    port: int
    start_to_ready_s: float
    grpc_port: int = 0  # deepserve's Open Inference Protocol gRPC port; 0: none

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def peer_python(peer: str) -> Path:
    """The peer's virtual environment's interpreter, installing the peer if needed."""
    venv = VENVS / peer
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = " ".join(PEER_PACKAGES[peer])
    if not marker.exists() or marker.read_text() != wanted:
        print(f"installing {peer} into {venv} (once)", flush=True)
        interpreter = PEER_INTERPRETERS.get(peer, sys.executable)
        subprocess.run([interpreter, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            + PEER_PACKAGES[peer],
            check=True,
        )
        marker.write_text(wanted)
    return python


def start(
    system: System,
    port: int,
    timeout_s: float,
    probe: tuple[str, str, bytes] | None = None,
    probe_headers: dict[str, str] | None = None,
) -> Running:
    """Start `system` and wait until it is ready: deepserve's /readyz, or for the others a
    real request (`probe`: path, type, body), answers 200."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    grpc_port = 0
    if system.name.startswith("deepserve"):
        # gRPC is on by default, on 8001: another port, so that nothing else's 8001 (or a
        # second benchmark's) stops the server from starting.
        grpc_port = free_port()
        env.update(
            DEEPSERVE_PORT=str(port),
            DEEPSERVE_GRPC_PORT=str(grpc_port),
            DEEPSERVE_LOG_LEVEL="warning",
            **system.env,
        )
        command = [sys.executable, "-m", "app"]
    elif system.name == "fastapi-noop":
        command = [sys.executable, "-m", "bench.noop_app", str(port)]
    elif system.name == "fastapi-noop-lean":
        command = [sys.executable, "-m", "bench.noop_app", str(port), "lean"]
    elif system.name == "ray-serve":
        command = [str(peer_python("ray")), "-m", "bench.peers.ray_serve_app", str(port)]
    elif system.name == "bentoml":
        python = peer_python("bentoml")
        command = [
            str(python.parent / "bentoml"),
            "serve",
            "bench.peers.bentoml_service:Peer",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        env["BENTOML_DO_NOT_TRACK"] = "true"
    elif system.name == "litserve":
        command = [str(peer_python("litserve")), "-m", "bench.peers.litserve_app", str(port)]
    elif system.name == "triton":
        command = [str(peer_python("triton")), "-m", "bench.peers.pytriton_app", str(port)]
    elif system.name == "mlserver":
        python = peer_python("mlserver")
        command = [str(python.parent / "mlserver"), "start", "bench/peers/mlserver"]
        env.update(
            MLSERVER_HTTP_PORT=str(port),
            MLSERVER_GRPC_PORT=str(free_port()),
            MLSERVER_METRICS_PORT=str(free_port()),
        )
    else:
        raise ValueError(system.name)
    started = time.monotonic()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # so that stopping it stops every process it started
    )
    if probe is None and not system.name.startswith("deepserve"):
        raise ValueError(f"{system.name} needs a probe request to tell when it is ready")
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{system.name} exited with {process.returncode} before ready")
        if time.monotonic() - started > timeout_s:
            stop_process(process)
            raise TimeoutError(f"{system.name} not ready in {timeout_s:.0f} s")
        if system.name.startswith("deepserve"):
            # Ready means every model, not only the one the probe uses.
            request = urllib.request.Request(f"http://127.0.0.1:{port}/readyz")
        else:
            assert probe is not None
            path, content_type, body = probe
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                data=body,
                headers={"Content-Type": content_type, **(probe_headers or {})},
            )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    return Running(system, process, port, time.monotonic() - started, grpc_port)


def settled_rss(running: Running, timeout_s: float = 120.0) -> float:
    """Resident memory in MB once the server has loaded what it will: deepserve's /readyz
    is ready with each model's newest version, and older ones load after it (tens of MB)."""
    if running.system.name.startswith("deepserve"):
        url = f"http://127.0.0.1:{running.port}/v1/models"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=5) as response:
                models = json.load(response)["models"]
            if all(v["state"] != "loading" for m in models for v in m["versions"]):
                break
            time.sleep(0.2)
    return rss_mb(running.process.pid)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
