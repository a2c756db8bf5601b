"""ONNX export: graph, checker, ONNX Runtime parity, and the model card, as one new version."""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from app.model_card import ModelCard

OPSET = 17
PARITY_TOLERANCE = 1e-4
# The float16 graph rounds weights and activations to 11 significant bits: a hundred times
# float32's tolerance on the outputs (probabilities), and no more, or the top class may move.
FP16_PARITY_TOLERANCE = 1e-2
FP16_LARGEST = 65504.0  # float16's largest finite value: past it, inf
FP16_HEADROOM = 16.0  # activations seen at export must stay this far below it
# A companion graph that gives the model's output too must give it as the model does: the
# service takes decisions from either, and a threshold should not see the difference.
AGREEMENT_TOLERANCE = 1e-6


class ParityError(RuntimeError):
    """ONNX Runtime does not reproduce PyTorch's outputs."""


def next_version(model_dir: Path) -> int:
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def export_onnx(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: str | Sequence[str],
) -> None:
    """Export with a dynamic batch axis and run the ONNX checker. A module that returns a
    tuple names each of its outputs."""
    module = module.eval().cpu()
    outputs = [output_names] if isinstance(output_names, str) else list(output_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            module,
            (example.cpu(),),
            str(path),
            input_names=[input_name],
            output_names=outputs,
            dynamic_axes={name: {0: "batch"} for name in [input_name, *outputs]},
            opset_version=OPSET,
            dynamo=False,
        )
    onnx.checker.check_model(str(path), full_check=True)


def check_parity(
    module: nn.Module, path: Path, inputs: np.ndarray, tolerance: float = PARITY_TOLERANCE
) -> float:
    """Max |ORT - PyTorch| over batches of 1 and 64 real inputs, every output; raises past
    the tolerance."""
    module = module.eval().cpu()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    worst = 0.0
    for batch in (1, 64):
        rows = inputs[:batch]
        if len(rows) < batch:
            rows = np.resize(rows, (batch, *inputs.shape[1:]))
        with torch.no_grad():
            expected = module(torch.from_numpy(np.ascontiguousarray(rows)))
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        actual = session.run(None, {input_name: rows})
        for got, want in zip(actual, expected, strict=True):
            want = want.numpy()
            if not (np.isfinite(got).all() and np.isfinite(want).all()):
                raise ParityError("a runtime gives values that are not finite (NaN or inf)")
            worst = max(worst, float(np.max(np.abs(got - want))))
    if worst > tolerance:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.2e} > {tolerance}")
    return worst


def export_half_precision(model: Path, path: Path) -> None:
    """`model` with float16 weights and arithmetic, its inputs and outputs as they were
    (casts at the edges), so that the service feeds both the same rows."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(model)), keep_io_types=True)
    onnx.save(half, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def largest_activation(model: Path, inputs: np.ndarray) -> float:
    """The largest |value| of any float tensor the graph computes, over `inputs`."""
    graph = onnx.load(str(model))
    known = {o.name for o in graph.graph.output}
    for node in graph.graph.node:
        for name in node.output:
            if name not in known:  # every intermediate as an output; its type is found at load
                graph.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    values = session.run(None, {session.get_inputs()[0].name: inputs})
    floats = [v for v in values if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.size]
    return max(float(np.max(np.abs(v))) for v in floats)


def half_precision_card(
    module: nn.Module, model: Path, path: Path, inputs: np.ndarray
) -> dict | None:
    """Export `path` (float16) from the float32 graph and check it; its card entry where
    it holds, else None (and no file): then only float32 ships. Two checks, as a CPU can
    run them: every activation far from float16's largest value (where float16 overflows to
    inf), and the outputs against PyTorch's within `FP16_PARITY_TOLERANCE` (ONNX Runtime's
    CPU runs float16 nodes in float32, so this measures the rounded weights; a GPU's
    float16 arithmetic is measured on a GPU)."""
    largest = largest_activation(model, inputs)
    if largest > FP16_LARGEST / FP16_HEADROOM:
        print(f"no float16 graph: an activation reaches {largest:.3g}, too near float16's limit")
        return None
    export_half_precision(model, path)
    try:
        difference = check_parity(module, path, inputs, FP16_PARITY_TOLERANCE)
    except ParityError as exc:
        print(f"no float16 graph: {exc}")
        path.unlink()
        return None
    return {
        "file": path.name,
        "parity_tolerance": FP16_PARITY_TOLERANCE,
        "parity_max_abs_diff": difference,
        "largest_activation": largest,
    }


def check_agreement(model: Path, companion: Path, output_name: str, inputs: np.ndarray) -> float:
    """Max |model - companion| of `output_name` in ONNX Runtime over real inputs, batches
    of 1 and all; raises past `AGREEMENT_TOLERANCE`."""
    sessions = [
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in (model, companion)
    ]
    input_name = sessions[0].get_inputs()[0].name
    worst = 0.0
    for rows in (inputs[:1], inputs):
        ours, theirs = (s.run([output_name], {input_name: rows})[0] for s in sessions)
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    if worst > AGREEMENT_TOLERANCE:
        raise ParityError(
            f"{companion.name} gives {output_name} {worst:.2e} away from the model's "
            f"(> {AGREEMENT_TOLERANCE})"
        )
    return worst


@dataclass(frozen=True)
class Companion:
    """A second graph published beside the model, over the same input rows (the reasons
    graph): exported and checked the same way."""

    module: nn.Module
    file: str
    output_names: tuple[str, ...]


def publish(
    module: nn.Module,
    example_inputs: np.ndarray,
    card_fields: dict,
    models_dir: Path,
    name: str,
    companions: Sequence[Companion] = (),
    fp16: bool = False,
) -> Path:
    """Export, check, and write `<models_dir>/<name>/<next version>/`; never overwrites.
    With `fp16`, a float16 graph beside the model where its parity holds (for GPUs)."""
    model_dir = models_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        onnx_path = staging / "model.onnx"
        input_name, output_name = (
            card_fields["inputs"][0]["name"],
            card_fields["outputs"][0]["name"],
        )
        export_onnx(
            module, torch.from_numpy(example_inputs[:2]), onnx_path, input_name, output_name
        )
        difference = check_parity(module, onnx_path, example_inputs)
        metrics = {**card_fields.get("metrics", {}), "onnx_parity_max_abs_diff": difference}
        if fp16:
            half = half_precision_card(
                module, onnx_path, staging / "model.fp16.onnx", example_inputs
            )
            card_fields = {**card_fields, "fp16": half}
        for companion in companions:
            path = staging / companion.file
            example = torch.from_numpy(example_inputs[:2])
            export_onnx(companion.module, example, path, input_name, companion.output_names)
            metrics[f"{path.stem}_onnx_parity_max_abs_diff"] = check_parity(
                companion.module, path, example_inputs
            )
            if output_name in companion.output_names:
                metrics[f"{path.stem}_score_max_abs_diff"] = check_agreement(
                    onnx_path, path, output_name, example_inputs
                )
        while True:
            version = next_version(model_dir)
            card = ModelCard.model_validate(
                {**card_fields, "name": name, "version": version, "metrics": metrics}
            )
            (staging / "model.json").write_text(card.model_dump_json(indent=2) + "\n")
            staging.chmod(0o755)  # mkdtemp makes it private; servers run as other users
            target = model_dir / str(version)
            try:
                staging.rename(target)  # atomic; fails if another run took this version
            except OSError:
                continue
            return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def promote(candidate: Path, models_dir: Path, name: str) -> Path:
    """Copy an exported version folder to `<models_dir>/<name>/<next version>/`."""
    model_dir = models_dir / name
    model_dir.mkdir(parents=True, exist_ok=True)
    card = ModelCard.model_validate_json((candidate / "model.json").read_text())
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    try:
        shutil.copy2(candidate / "model.onnx", staging / "model.onnx")
        for companion in (card.reasons, card.fp16):
            if companion is not None:
                shutil.copy2(candidate / companion.file, staging / companion.file)
        while True:
            version = next_version(model_dir)
            renamed = card.model_copy(update={"name": name, "version": version})
            (staging / "model.json").write_text(renamed.model_dump_json(indent=2) + "\n")
            staging.chmod(0o755)
            target = model_dir / str(version)
            try:
                staging.rename(target)
            except OSError:
                continue
            return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)
