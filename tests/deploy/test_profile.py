"""`make profile`: py-spy's stacks read back by thread and stage; and, where py-spy and wrk
are installed, a short real run against the real server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.profile import OTHER, read_stacks, stage_of
from tests.conftest import REPO_ROOT


def test_the_innermost_frame_that_names_a_stage_decides() -> None:
    route = "score (app/api/fraud.py:40)"
    codec = "decode (app/codecs/transactions.py:88)"
    decoder = "raw_decode (/usr/lib/python3.11/json/decoder.py:353)"
    assert stage_of(["run (asyncio/events.py:84)", route, codec, decoder]) == (
        "body parsing, answers"
    )
    assert stage_of(["run (asyncio/events.py:84)", route]) == "routes, middleware"
    ort = "run (site-packages/onnxruntime/capi/onnxruntime_inference_collection.py:273)"
    assert stage_of(["_timed_run (app/serving/batching.py:369)", ort]) == "ONNX Runtime"
    assert stage_of(["<module> (script.py:1)"]) == OTHER


def test_raw_stacks_are_counted_by_thread_and_stage() -> None:
    raw = "\n".join(
        [
            "thread (101);run (asyncio/events.py:84);feed (httptools/parser.py:1) 7",
            "thread (101): MainThread;run (asyncio/events.py:84) 3",
            "thread (202);_timed_run (app/serving/batching.py:369);"
            "run (onnxruntime/capi/session.py:2) 5",
        ]
    )
    stacks = read_stacks(raw)
    assert stacks[101] == {"HTTP server (uvicorn)": 7, "event loop": 3}
    assert stacks[202] == {"ONNX Runtime": 5}


SPY = Path(sys.executable).with_name("py-spy")


def spy_can_attach() -> bool:
    """Whether py-spy may read another process here (containers may forbid ptrace)."""
    script = "import time; print('up', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        child.stdout.readline()  # its interpreter is up
        dump = subprocess.run([SPY, "dump", "--pid", str(child.pid)], capture_output=True)
        return dump.returncode == 0
    finally:
        child.kill()
        child.communicate()


@pytest.mark.skipif(
    shutil.which("wrk") is None or not SPY.exists(),
    reason="needs wrk and py-spy (make test installs them)",
)
def test_a_short_profile_accounts_for_the_servers_cores(tmp_path: Path) -> None:
    if not spy_can_attach():
        pytest.skip("py-spy may not attach to another process on this machine (ptrace)")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.profile",
            "--seconds",
            "2",
            "--workloads",
            "fraud-1",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    (result,) = tmp_path.glob("profile-*.json")
    (fraud,) = json.loads(result.read_text())["profiles"]
    assert fraud["rps"] > 0 and fraud["samples"] > 0
    assert "event loop" in fraud["cores"] and sum(fraud["cores"].values()) > 0.2
    assert sum(fraud["loop_stages"].values()) > 0
    assert (tmp_path / result.name.replace(".json", ".png")).stat().st_size > 0
