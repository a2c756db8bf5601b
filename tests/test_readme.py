"""The README's examples work as written, against `python -m app` on the committed models."""

from __future__ import annotations

import json
import re
import subprocess
import time

import httpx

from tests.conftest import REPO_ROOT
from tests.server import running_server


def readme_curl_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("curl ")]


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


def _wait_until_every_version_has_loaded(base: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        models = httpx.get(f"{base}/v1/models", timeout=5).json()["models"]
        states = {v["state"] for model in models for v in model["versions"]}
        if "loading" not in states:
            return
        assert time.monotonic() < deadline, f"still loading after {timeout_s} s: {models}"
        time.sleep(0.1)
