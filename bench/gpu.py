"""`python -m bench.gpu OUT`: the GPU path, measured in one go on a machine with a GPU.

Each step runs where this machine can, and is recorded as skipped, with the reason, where
it cannot; so the script runs on a CPU too, where its test runs it before GPU time is spent.

1. ONNX Runtime with CUDA: when the installed onnxruntime has no CUDA provider and
   `--wheel-parts` names a folder of a wheel's parts (`split -b 60M W.whl DIR/W.whl.part-`,
   so that each fits a transfer), they are joined and installed (`onnxruntime-gpu`), and
   `preload_dlls` loads the CUDA libraries that PyTorch brought.
2. Training on CUDA: `python -m training images` with a wider, longer recipe than the CPU's
   (bf16 autocast and channels-last are on for CUDA in `training/images.py`), timed, into
   OUT/models; export and parity as on the CPU, and a float16 graph (`--fp16`).
3. In process: the image model (the one just trained where there is one, else the
   repository's) at each batch size, one image's latency, and how far its outputs are
   from float32 ONNX Runtime on the CPU, for every provider setting this machine has:
   CPU; CUDA and TensorRT in float32 and float16; I/O binding; CUDA graphs.
4. Served: `python -m bench --only systems` on deepserve, batching on and off, one image a
   request at c=1 and c=64, with the service on the best device here.

Writes OUT/gpu-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Wider and longer than the CPU default ([64, 256, 256], 14 epochs): the GPU recipe.
GPU_RECIPE = ["--widths", "128", "384", "384", "--epochs", "40"]
CUDA = {"DEEPSERVE_DEVICE": "cuda"}
SETTINGS = {  # provider setting -> the service's environment for it
    "CPU": {"DEEPSERVE_DEVICE": "cpu"},
    "CUDA fp32": {**CUDA, "DEEPSERVE_IO_BINDING": "off", "DEEPSERVE_FP16": "false"},
    "CUDA fp32, I/O binding": {**CUDA, "DEEPSERVE_IO_BINDING": "on", "DEEPSERVE_FP16": "false"},
    "CUDA fp16, I/O binding": {**CUDA, "DEEPSERVE_IO_BINDING": "on", "DEEPSERVE_FP16": "true"},
    "CUDA fp16, CUDA graphs": {**CUDA, "DEEPSERVE_CUDA_GRAPHS": "true", "DEEPSERVE_FP16": "true"},
    "TensorRT fp32": {**CUDA, "DEEPSERVE_TENSORRT": "true", "DEEPSERVE_FP16": "false"},
    "TensorRT fp16": {**CUDA, "DEEPSERVE_TENSORRT": "true", "DEEPSERVE_FP16": "true"},
}
TRAINED = "cifar10-gpu"  # the model step 2 publishes, which steps 3 and 4 then serve


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--wheel-parts", type=Path, help="folder of onnxruntime-gpu's parts")
    parser.add_argument(
        "--data", default=str(ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz")
    )
    parser.add_argument("--quick", action="store_true", help="seconds: checks the script")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Any] = {"ort": _install_ort(args.wheel_parts)}
    cuda = "CUDAExecutionProvider" in steps["ort"]["providers"] and _gpu_present()
    steps["training"] = _train(args, cuda)
    serve_env = {}
    if "metrics" in steps["training"]:
        serve_env = {
            "DEEPSERVE_MODEL_REPOSITORY": str(args.out / "models"),
            "DEEPSERVE_DEFAULT_IMAGE_MODEL": TRAINED,
        }
    steps["in_process"] = _in_process(args, cuda, steps["ort"]["providers"], serve_env)
    steps["served"] = _served(args, cuda, serve_env)
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick, **steps}
    stem = args.out / f"gpu-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(results))
    print(_markdown(results))
    return stem.with_suffix(".json")


def _install_ort(parts: Path | None) -> dict[str, Any]:
    import onnxruntime as ort

    note = "the installed onnxruntime"
    if "CUDAExecutionProvider" not in ort.get_available_providers() and parts is not None:
        pieces = sorted(parts.iterdir())
        wheel = Path("/tmp") / pieces[0].name.split(".part")[0]
        with wheel.open("wb") as joined:
            for piece in pieces:
                joined.write(piece.read_bytes())
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", str(wheel)], check=True)
        note = f"installed {wheel.name} from {len(pieces)} parts"
    # A fresh interpreter sees what was just installed.
    probe = (
        "import onnxruntime as o; getattr(o, 'preload_dlls', lambda: None)(); "
        "import json; print(json.dumps([o.__version__, o.get_available_providers()]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    version, providers = json.loads(out.stdout.strip().splitlines()[-1])
    return {"note": note, "version": version, "providers": providers}


def _gpu_present() -> bool:
    from app.serving.providers import count_cuda_devices

    return count_cuda_devices() > 0


def _train(args: argparse.Namespace, cuda: bool) -> dict[str, Any]:
    if not cuda:
        return {
            "skipped": "no CUDA GPU (or no CUDA provider): the CPU recipe is `make train-cifar10`"
        }
    if not Path(args.data).exists():
        return {"skipped": f"no dataset at {args.data}"}
    command = [
        sys.executable, "-m", "training", "images", "--device", "cuda", "--data", args.data,
        "--name", TRAINED, "--models-dir", str(args.out / "models"),
        "--runs-dir", str(args.out / "runs"), "--fp16", *GPU_RECIPE,
    ]  # fmt: skip
    if args.quick:
        command += ["--epochs", "1", "--train-per-class", "50", "--test-per-class", "20"]
    started = time.monotonic()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    minutes = (time.monotonic() - started) / 60
    if run.returncode != 0:
        return {"failed": run.stderr[-2000:], "minutes": round(minutes, 2)}
    cards = sorted((args.out / "models" / TRAINED).glob("*/model.json"))
    card = json.loads(cards[-1].read_text())
    return {
        "command": " ".join(command[1:]),
        "minutes": round(minutes, 2),
        "metrics": card["metrics"],
        "fp16": card.get("fp16"),
    }


def _in_process(
    args: argparse.Namespace, cuda: bool, providers: list[str], serve_env: dict[str, str]
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for name, env in SETTINGS.items():
        if env["DEEPSERVE_DEVICE"] == "cuda" and not cuda:
            rows[name] = {"skipped": "no CUDA GPU"}
            continue
        if "DEEPSERVE_TENSORRT" in env and "TensorrtExecutionProvider" not in providers:
            rows[name] = {"skipped": "no TensorRT provider in this onnxruntime"}
            continue
        # Each setting in its own interpreter: sessions and CUDA state do not carry over.
        code = (
            "import json, sys; from bench.gpu import measure_in_process; "
            "print(json.dumps(measure_in_process(sys.argv[1] == 'quick')))"
        )
        mode = "quick" if args.quick else "full"
        run = subprocess.run(
            [sys.executable, "-c", code, mode],
            cwd=ROOT,
            env={**os.environ, **serve_env, **env},
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            rows[name] = {"failed": run.stderr[-2000:]}
        else:
            rows[name] = json.loads(run.stdout.strip().splitlines()[-1])
    return rows


def measure_in_process(quick: bool) -> dict[str, Any]:
    """The served image model in this process, with the settings of the environment."""
    from app.settings import Settings
    from bench import inprocess
    from bench.workloads import sample_images

    settings = Settings(_env_file=None)
    images, _ = sample_images(20 if quick else 100)
    sizes = [1, 8] if quick else [1, 8, 32, 64, 128, 256]
    limit = inprocess.measure(
        settings.default_image_model, settings, images, [], sizes, 0.1 if quick else 1.0
    )
    return {
        "model": f"{limit.model}/{limit.version}",
        "images_per_s": {str(b): round(r, 1) for b, r in limit.items_per_s.items()},
        "best_batch": limit.best_batch,
        "one_image_ms": round(limit.single_p50_ms, 3),
        **agreement_with_cpu(settings, images),
    }


def agreement_with_cpu(settings: Any, images: list[bytes]) -> dict[str, Any]:
    """The served runtime's outputs beside float32 ONNX Runtime on the CPU, over the
    sample images: what float16 (and each provider's kernels) move, measured where they
    run."""
    import numpy as np
    import onnxruntime as ort

    from app.serving.providers import choose_providers
    from app.serving.repository import read_card
    from app.serving.runtime import ModelRuntime
    from bench import inprocess

    version = inprocess.stateless_version(settings.model_repository, settings.default_image_model)
    card = read_card(version)
    config = settings.registry_config()
    runtime = ModelRuntime.load(
        card, version.onnx_path, config.runtime, choose_providers(config.device)
    )
    rows = inprocess.input_rows(card, images, [], len(images))
    chunks = range(0, len(rows), runtime.max_batch_size)
    served = np.concatenate(
        [runtime.run_batch(rows[i : i + runtime.max_batch_size]) for i in chunks]
    )
    reference = ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])
    (expected,) = reference.run([card.outputs[0].name], {card.input.name: rows})
    return {
        "providers": runtime.providers,
        "precision": runtime.precision,
        "input_memory": runtime.input_memory,
        "max_abs_diff_from_cpu_fp32": float(np.max(np.abs(served - expected))),
        "top1_agreement_with_cpu_fp32": float(np.mean(served.argmax(1) == expected.argmax(1))),
    }


def _served(args: argparse.Namespace, cuda: bool, serve_env: dict[str, str]) -> dict[str, Any]:
    env = {**os.environ, **serve_env, "DEEPSERVE_DEVICE": "cuda" if cuda else "cpu"}
    command = [
        sys.executable, "-m", "bench", "--only", "systems", "--systems", "deepserve",
        "deepserve-unbatched", "--workloads", "image-1", "--levels", "1", "64",
        "--out", str(args.out),
    ]  # fmt: skip
    if args.quick:
        command += ["--quick"]
    run = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        return {"failed": run.stderr[-2000:]}
    written = max(args.out.glob("*-*.json"), key=lambda p: p.stat().st_mtime)
    results = json.loads(written.read_text())
    return {
        "device": env["DEEPSERVE_DEVICE"],
        "results_file": written.name,
        "rows": [
            {k: r[k] for k in ("system", "workload", "concurrency", "rps", "p50_ms", "p99_ms")}
            for r in results["results"]
        ],
        "targets": results["targets"],
    }


def _markdown(results: dict[str, Any]) -> str:
    ort = results["ort"]
    lines = [
        f"# GPU path {results['date']}"
        + (" (quick: not a measurement)" if results["quick"] else ""),
        "",
        f"ONNX Runtime {ort['version']} ({ort['note']}): {', '.join(ort['providers'])}.",
        "",
        "## Training on CUDA",
        "",
        _outcome(results["training"]),
        "",
        "## In process: the image model, images/s by batch size",
        "",
        "| setting | precision | images/s by batch | best batch | one image ms "
        "| max abs diff from CPU fp32 | top-1 agreement |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results["in_process"].items():
        if "images_per_s" not in row:
            lines.append(f"| {name} | | {_outcome(row)} | | | | |")
            continue
        rates = ", ".join(f"{b}: {r:,.0f}" for b, r in row["images_per_s"].items())
        lines.append(
            f"| {name} | {row['precision']} | {rates} | {row['best_batch']} "
            f"| {row['one_image_ms']} | {row['max_abs_diff_from_cpu_fp32']:.2e} "
            f"| {row['top1_agreement_with_cpu_fp32']:.3f} |"
        )
    served = results["served"]
    lines += ["", "## Served, one image a request", ""]
    if "rows" not in served:
        lines.append(_outcome(served))
    else:
        lines += [
            f"Device: {served['device']}; full results in {served['results_file']}.",
            "",
            "| system | concurrency | req/s | p50 ms | p99 ms |",
            "| --- | --- | --- | --- | --- |",
            *(
                f"| {r['system']} | {r['concurrency']} | {r['rps']:,.0f} | {r['p50_ms']} "
                f"| {r['p99_ms']} |"
                for r in served["rows"]
            ),
        ]
    return "\n".join(lines) + "\n"


def _outcome(step: dict[str, Any]) -> str:
    if "skipped" in step:
        return f"skipped: {step['skipped']}"
    if "failed" in step:
        return (
            "failed: " + step["failed"].strip().splitlines()[-1]
            if step["failed"].strip()
            else "failed"
        )
    return ", ".join(f"{k}: {v}" for k, v in step.items())


if __name__ == "__main__":
    main()
