"""One measurement window with wrk: throughput, latency percentiles, errors, and wrk's CPU."""

from __future__ import annotations

import re
import resource
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(__file__).with_name("rotate.lua")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass(frozen=True)
class Window:
    seconds: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int  # non-2xx answers plus socket errors
    generator_cpu: float  # cores wrk used on average during the window


def run_window(
    url: str,
    content_type: str,
    bodies: list[Path],
    concurrency: int,
    seconds: float,
    headers: list[dict[str, str]] | None = None,
    script: Path = SCRIPT,
    script_args: tuple[str, ...] = (),
) -> Window:
    """Run wrk against `url` for about `seconds`, rotating through `bodies` (each sent with
    its own `headers`, when given). Another `script` takes the same two arguments first,
    then `script_args`."""
    lines = [str(p) for p in bodies]
    if headers is not None:
        lines = [
            "\t".join([line, *(f"{name}: {value}" for name, value in these.items())])
            for line, these in zip(lines, headers, strict=True)
        ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
        listing.write("\n".join(lines) + "\n")
    threads = 1 if concurrency < 16 else 2
    seconds = max(1, round(seconds))  # wrk takes whole seconds
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--timeout",
            "30s",
            "--latency",
            "-s",
            str(script),
            url,
            "--",
            content_type,
            listing.name,
            *script_args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    Path(listing.name).unlink()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse(out, seconds, cpu)


def parse(output: str, seconds: float, cpu_seconds: float) -> Window:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
        if not match:
            return float("nan")
        return float(match.group(1)) * _UNITS[match.group(2)] * 1000

    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = 0
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        errors += int(match.group(1))
    if match := re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    ):
        errors += sum(int(g) for g in match.groups())
    return Window(
        seconds=seconds,
        requests=requests,
        rps=rps,
        p50_ms=latency("50"),
        p90_ms=latency("90"),
        p99_ms=latency("99"),
        errors=errors,
        generator_cpu=cpu_seconds / seconds,
    )
