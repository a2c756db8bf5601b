"""The README's examples work as written, against `python -m app` on the committed models."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx

from tests.conftest import REPO_ROOT
from tests.server import RunningServer, running_server

# Pages whose examples run against the committed models, as the README's do.
PAGES = ["README.md", "docs/open-inference.md", "docs/fraud-history.md"]


def readme_curl_commands() -> list[str]:
    commands = []
    for page in PAGES:
        blocks = re.findall(r"```sh\n(.*?)```", (REPO_ROOT / page).read_text(), flags=re.S)
        commands += [line for b in blocks for line in b.splitlines() if line.startswith("curl ")]
    return commands


def test_the_readme_opens_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["make run", "make test"]


def test_every_curl_example_answers_without_error() -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 5
    with running_server() as base:
        # /readyz is 200 once the newest version of each model serves; the examples also pin
        # older versions, which finish loading a moment later.
        _wait_until_every_version_has_loaded(base)
        port = base.rsplit(":", 1)[1]
        for command in commands:
            command = command.replace("localhost:8000", f"127.0.0.1:{port}")
            result = subprocess.run(
                ["bash", "-c", command + " --fail-with-body"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 0, f"{command}\n{result.stdout}{result.stderr}"
            answer = json.loads(result.stdout)
            assert "error" not in answer, command


def test_the_triton_client_examples_print_what_the_pages_say() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    page = (REPO_ROOT / "docs/open-inference.md").read_text()
    (short,) = re.findall(r"```python\n(import numpy as np, tritonclient.*?)```", readme, re.S)
    (longer,) = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    said_short = re.findall(r"# (\d+): ", short)
    said_longer = re.findall(r"`(b'[^`]+'|0\.\d+)`", page.split("## With Triton's client")[1])
    assert said_short and len(said_longer) == 3
    with running_server() as base:
        outputs = [_run_example(example, base) for example in (short, longer)]
    assert outputs[0].strip() == said_short[0]
    for said in said_longer:
        assert said.strip("b'") in outputs[1], f"{said} not in:\n{outputs[1]}"


def _run_example(example: str, base: RunningServer) -> str:
    example = example.replace("localhost:8000", base.removeprefix("http://"))
    example = example.replace("localhost:8001", base.grpc_target)
    result = subprocess.run(
        [sys.executable, "-c", example], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _wait_until_every_version_has_loaded(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        models = httpx.get(f"{base}/v1/models", timeout=5).json()["models"]
        states = {v["state"] for model in models for v in model["versions"]}
        if "loading" not in states:
            return
        assert time.monotonic() < deadline, f"still loading after {timeout_s} s: {models}"
        time.sleep(0.1)
