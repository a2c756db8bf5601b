"""Triton's perf_analyzer as a load generator for deepserve's Open Inference Protocol.

The real binary ships in the manylinux wheel of `tritonclient` (the PyPI package
`perf-analyzer` is an empty placeholder), installed into its own venv under `bench/.venvs/`
like the peers. It links `libcudart.so.12` even when it drives a CPU server (from the
`nvidia-cuda-runtime-cu12` wheel, put on `LD_LIBRARY_PATH` here) and `libb64.so.0d`
(Debian's `libb64-0d`, which `make bench` installs).

Each run is perf_analyzer's own measurement: synchronous requests (`concurrency` threads,
each with one request in flight, as wrk keeps one per connection), windows of
`interval_ms` until the last three agree within `stable_within` on throughput and mean
latency; it reports those three windows. A run that does not settle is taken again as
three windows without the check, and marked unstable.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.systems import PEER_PACKAGES, peer_python
from bench.workloads import V2Input

VENV = "perf-analyzer"
VERSION = next(p for p in PEER_PACKAGES[VENV] if p.startswith("tritonclient")).replace("==", " ")
_UNSTABLE = "Failed to obtain stable measurement"


@dataclass(frozen=True)
class Generator:
    binary: Path
    env: dict[str, str]


@dataclass(frozen=True)
class Measurement:
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    stable: bool
    seconds: float  # the whole run, its unstable windows and start included
    generator_cpu: float  # cores perf_analyzer used on average over `seconds`


def install() -> Generator:
    """perf_analyzer from its venv (installed on first use), checked to start here; raises
    RuntimeError saying why it cannot."""
    python = peer_python(VENV)
    binary = python.parent / "perf_analyzer"
    cuda = sorted(python.parent.parent.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib"))
    paths = [str(p) for p in cuda] + [os.environ.get("LD_LIBRARY_PATH", "")]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in paths if p)}
    try:
        check = subprocess.run([binary, "--version"], env=env, capture_output=True, text=True)
    except OSError as exc:
        raise RuntimeError(f"{binary}: {exc}") from None
    if check.returncode != 0:
        raise RuntimeError(f"{binary} does not start: {(check.stdout + check.stderr).strip()}")
    return Generator(binary, env)


def write_input_data(inputs: list[V2Input], path: Path) -> Path:
    """perf_analyzer's `--input-data` file: one entry per request, rotated through. Shapes
    leave out the batch axis (perf_analyzer adds it, `-b 1`); BYTES go as their raw
    serialization (4-byte little-endian length, then the bytes) in base64."""
    entries = []
    for tensor in inputs:
        if tensor.datatype == "BYTES":
            content: object = {"b64": base64.b64encode(tensor.raw).decode()}
        else:
            content = list(tensor.values)
        entries.append({tensor.name: {"content": content, "shape": tensor.shape[1:]}})
    path.write_text(json.dumps({"data": entries}))
    return path


def run(
    generator: Generator,
    model: str,
    version: int,
    url: str,
    protocol: str,
    input_data: Path,
    concurrency: int,
    interval_ms: int,
    stable_within: float,
    max_trials: int,
) -> Measurement:
    """One perf_analyzer run against `url` (host:port) over `protocol` ("http": the binary
    tensor data extension both ways; "grpc")."""
    command = [
        str(generator.binary),
        "-m",
        model,
        "-x",
        str(version),
        "-u",
        url,
        "-i",
        protocol,
        "-b",
        "1",
        "--input-data",
        str(input_data),
        "--concurrency-range",
        f"{concurrency}:{concurrency}",
        "--measurement-interval",
        str(interval_ms),
    ]
    if protocol == "http":
        command += ["--input-tensor-format", "binary", "--output-tensor-format", "binary"]
    stable = True
    measured = _run(generator, command, f"{stable_within * 100:g}", max_trials)
    if measured is None:
        # Not settled: three windows without the check, reported as such.
        stable = False
        measured = _run(generator, command, "1000000", 3)
        if measured is None:
            raise RuntimeError("perf_analyzer did not report a measurement")
    (rps, p50, p90, p99), seconds, cpu = measured
    return Measurement(rps, p50, p90, p99, stable, seconds, cpu)


def _run(
    generator: Generator, command: list[str], stability_percent: str, max_trials: int
) -> tuple[tuple[float, float, float, float], float, float] | None:
    """(req/s, p50, p90, p99 ms), seconds, cores; None when perf_analyzer did not settle."""
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as folder:
        report = Path(folder) / "report.csv"
        full = [*command, "-s", stability_percent, "-r", str(max_trials), "-f", str(report)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.monotonic()
        out = subprocess.run(full, env=generator.env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        text = out.stdout + out.stderr
        if out.returncode != 0 or not report.exists():
            if _UNSTABLE in text:
                return None
            raise RuntimeError(f"perf_analyzer failed ({out.returncode}): {text.strip()[-2000:]}")
        with report.open() as f:
            (row,) = list(csv.DictReader(f))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # Latencies in the report are microseconds; with -b 1 an inference is a request.
    ms = [float(row[f"p{p} latency"]) / 1000 for p in (50, 90, 99)]
    return (float(row["Inferences/Second"]), ms[0], ms[1], ms[2]), seconds, cpu / seconds
