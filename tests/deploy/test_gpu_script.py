"""The GPU script on this machine's CPU, so that it is known to run before GPU time is
spent on it: each step measured where the CPU can, skipped with its reason where not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.serving.providers import count_cuda_devices
from tests.conftest import REPO_ROOT

pytestmark = [
    pytest.mark.skipif(shutil.which("wrk") is None, reason="needs wrk (apt-get install wrk)"),
    pytest.mark.skipif(count_cuda_devices() > 0, reason="a GPU is here: run it for real"),
]


def test_gpu_script_runs_on_the_cpu_and_says_what_it_skipped(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.gpu", str(tmp_path), "--quick"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (written,) = tmp_path.glob("gpu-*.json")
    results = json.loads(written.read_text())
    assert "CPUExecutionProvider" in results["ort"]["providers"]
    assert results["training"]["skipped"].startswith("no CUDA GPU")
    cpu = results["in_process"]["CPU"]
    assert all(rate > 0 for rate in cpu["images_per_s"].values()) and cpu["one_image_ms"] > 0
    # The CPU serves float32 ONNX Runtime on the CPU: the very reference it is compared with.
    assert cpu["precision"] == "fp32" and cpu["max_abs_diff_from_cpu_fp32"] < 1e-5
    assert cpu["top1_agreement_with_cpu_fp32"] == 1.0
    assert {name for name, row in results["in_process"].items() if "skipped" in row} == {
        name for name in results["in_process"] if name != "CPU"
    }
    served = results["served"]
    assert served["device"] == "cpu"
    assert {(r["system"], r["concurrency"]) for r in served["rows"]} >= {("deepserve", 1)}
    assert all(r["rps"] > 0 for r in served["rows"])
    assert "## Served, one image a request" in written.with_suffix(".md").read_text()
