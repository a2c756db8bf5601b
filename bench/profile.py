"""`make profile` / `python -m bench.profile`: where a served request's time goes.

For each workload (one CIFAR-10 JPEG per request; one transaction per request), at c=64:
start deepserve, warm it up, then run wrk for a window while py-spy samples the server's
Python threads (attached, without pausing them, 100 times a second), and read every
thread's CPU time from /proc before and after the window. It reports:

- the cores the server used, by thread: the event loop's (HTTP, routing, body parsing,
  answers, and small batches run inline), the batcher's (it calls ONNX Runtime), the image
  decoders', and threads Python does not run (ONNX Runtime's intra-op pool);
- the event loop thread's busy samples by stage, each sample counted for the innermost
  frame whose module names a stage (a JSON decoder called by our codec is body parsing).

py-spy itself takes a few percent of a core; the window's requests/s is reported beside
the figures so that its cost shows against the bench's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.procs import free_port
from bench.systems import SYSTEMS, start, stop_process
from bench.workloads import WORKLOADS, build, sample_images, sample_transactions
from bench.wrk import run_window

ROOT = Path(__file__).resolve().parents[1]
LEVEL = 64
PROFILED = ("image-1", "fraud-1")
_TICKS = os.sysconf("SC_CLK_TCK")

# The innermost frame whose file path holds one of these names the sample's stage.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ONNX Runtime", ("onnxruntime/",)),
    ("image decode", ("PIL/", "app/codecs/images.py", "app/codecs/png.py")),
    ("body parsing, answers", ("json/", "orjson", "pydantic", "app/codecs/", "app/api/bodies")),
    ("batcher", ("app/serving/batching.py",)),
    ("serving, fraud logic", ("app/serving/", "app/fraud/")),
    ("routes, middleware", ("app/api/", "app/main.py")),
    ("FastAPI, Starlette", ("fastapi/", "starlette/", "anyio/")),
    ("HTTP server (uvicorn)", ("uvicorn/", "httptools", "h11/")),
    ("event loop", ("asyncio/", "uvloop/")),
    ("logging, metrics", ("logging/", "prometheus_client/", "opentelemetry/")),
)
OTHER = "other"
_THREAD = re.compile(r"thread \((\d+)")


@dataclass
class Profile:
    workload: str
    seconds: float
    rps_unsampled: float  # the window just before, without py-spy: its cost
    rps: float
    p99_ms: float
    cores: dict[str, float]  # by thread role: CPU seconds over the window's seconds
    loop_stages: dict[str, int]  # the event loop thread's busy samples by stage
    samples: int  # busy samples of all Python threads


def stage_of(frames: list[str]) -> str:
    """The stage of a stack (frames outermost first, each `function (file:line)`)."""
    for frame in reversed(frames):
        where = frame[frame.rfind("(") + 1 :]
        for stage, markers in STAGES:
            if any(marker in where for marker in markers):
                return stage
    return OTHER


def read_stacks(raw: str) -> dict[int, Counter[str]]:
    """py-spy's raw output with `--threads` -> busy samples by thread id, then stage."""
    by_thread: dict[int, Counter[str]] = defaultdict(Counter)
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])  # "thread (1234)", "thread (1234): MainThread"
        if thread is None:
            continue
        by_thread[int(thread.group(1))][stage_of(frames[1:])] += int(count)
    return by_thread


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds so far of each live thread of `pid`."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return seconds


def role_of(tid: int, pid: int, stages: Counter[str] | None) -> str:
    if tid == pid:
        return "event loop"
    if stages is None:
        return "not Python (ONNX Runtime's pool, others)"
    if stages["image decode"] > stages["ONNX Runtime"]:
        return "image decoders"
    if stages["ONNX Runtime"]:
        return "batcher (calls ONNX Runtime)"
    return "other Python threads"


def profile(workload: str, seconds: float, folder: Path, spy: str, raw: Path) -> Profile:
    """Profile `workload`; py-spy's stacks go to `raw` (collapsed: speedscope and
    flamegraph.pl read them)."""
    images, _ = sample_images()
    transactions, _ = sample_transactions()
    requests = build(WORKLOADS[workload], "deepserve", images, transactions, folder, 200)
    running = start(SYSTEMS["deepserve"], free_port(), timeout_s=300)
    try:
        url = running.base + requests.path
        run_window(url, requests.content_type, requests.bodies, LEVEL, 3.0)  # warm-up
        unsampled = run_window(url, requests.content_type, requests.bodies, LEVEL, seconds)
        pid = running.process.pid
        before = thread_cpu(pid)
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(round(seconds)),
                "--rate",
                "100",
                "--threads",
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        started = time.perf_counter()
        window = run_window(url, requests.content_type, requests.bodies, LEVEL, seconds)
        after = thread_cpu(pid)
        elapsed = time.perf_counter() - started
        _, errors = sampler.communicate(timeout=60)
        if sampler.returncode != 0:
            raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')[-500:]}")
    finally:
        stop_process(running.process)
    stacks = read_stacks(raw.read_text())
    cores: Counter[str] = Counter()
    for tid, used in after.items():
        role = role_of(tid, pid, stacks.get(tid))
        cores[role] += (used - before.get(tid, 0.0)) / elapsed
    return Profile(
        workload=workload,
        seconds=round(elapsed, 1),
        rps_unsampled=round(unsampled.rps, 1),
        rps=round(window.rps, 1),
        p99_ms=round(window.p99_ms, 2),
        cores={role: round(c, 3) for role, c in cores.most_common()},
        loop_stages=dict(stacks.get(pid, Counter()).most_common()),
        samples=sum(sum(c.values()) for c in stacks.values()),
    )


def markdown(profiles: list[Profile], header: str) -> str:
    lines = [f"# Where the time goes ({header})", ""]
    for p in profiles:
        used = sum(p.cores.values())
        loop_total = sum(p.loop_stages.values()) or 1
        lines += [
            f"## {p.workload}, c={LEVEL}: {p.rps:,.0f} req/s, p99 {p.p99_ms:.1f} ms "
            f"({p.seconds:.0f} s sampled; {p.rps_unsampled:,.0f} req/s in the same window "
            "just before, without py-spy)",
            "",
            f"The server used {used:.2f} cores:",
            "",
            "| thread | cores | share | CPU ms a request |",
            "| --- | --- | --- | --- |",
            *(
                f"| {role} | {c:.2f} | {c / used:.0%} | {1000 * c / p.rps:.3f} |"
                for role, c in p.cores.items()
            ),
            "",
            "The event loop thread's busy samples, by the innermost stage on the stack:",
            "",
            "| stage | share of its busy samples |",
            "| --- | --- |",
            *(f"| {s} | {n / loop_total:.0%} |" for s, n in p.loop_stages.items()),
            "",
        ]
    return "\n".join(lines)


def plot(profiles: list[Profile], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cores_axis, stages_axis) = plt.subplots(2, 1, figsize=(10, 5.5))
    colors = plt.get_cmap("tab20").colors
    names = [p.workload for p in profiles]
    roles = sorted({r for p in profiles for r in p.cores})
    left = [0.0] * len(profiles)
    for index, role in enumerate(roles):
        widths = [p.cores.get(role, 0.0) for p in profiles]
        cores_axis.barh(names, widths, left=left, label=role, color=colors[index * 2])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    cores_axis.set_xlabel("cores the server used during the window, by thread")
    cores_axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    stages = [name for name, _ in STAGES] + [OTHER]
    left = [0.0] * len(profiles)
    for index, stage in enumerate(stages):
        shares = [
            p.loop_stages.get(stage, 0) / max(sum(p.loop_stages.values()), 1) for p in profiles
        ]
        if any(shares):
            stages_axis.barh(names, shares, left=left, label=stage, color=colors[index])
            left = [a + b for a, b in zip(left, shares, strict=True)]
    stages_axis.set_xlabel("the event loop thread's busy samples, by stage")
    stages_axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="sampled window")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--workloads", nargs="+", default=list(PROFILED), choices=WORKLOADS)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy (in the dev extras)")
    from bench.harness import describe_machine  # the bench's own machine line

    machine = describe_machine()
    header = f"{machine['cpus']} x {machine['cpu']}, code at {machine['commit']}"
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"profile-{time.strftime('%Y%m%d-%H%M%S')}"
    with tempfile.TemporaryDirectory() as scratch:
        profiles = []
        for workload in args.workloads:
            print(f"profile: {workload} at c={LEVEL} for {args.seconds:.0f} s", flush=True)
            raw = base.with_name(f"{base.name}-{workload}.txt")
            result = profile(workload, args.seconds, Path(scratch) / workload, spy, raw)
            print(json.dumps(asdict(result)), flush=True)
            profiles.append(result)
    base.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "profiles": [asdict(p) for p in profiles]}, indent=2)
    )
    base.with_suffix(".md").write_text(markdown(profiles, header) + "\n")
    plot(profiles, base.with_suffix(".png"))
    print(f"wrote {base}.json, .md, .png, and py-spy's stacks in {base}-<workload>.txt")


if __name__ == "__main__":
    main()
