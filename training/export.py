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


def check_parity(module: nn.Module, path: Path, inputs: np.ndarray) -> float:
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
    if worst > PARITY_TOLERANCE:
        raise ParityError(f"ONNX Runtime differs from PyTorch by {worst:.2e} > {PARITY_TOLERANCE}")
    return worst


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
) -> Path:
    """Export, check, and write `<models_dir>/<name>/<next version>/`; never overwrites."""
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
        if card.reasons is not None:
            shutil.copy2(candidate / card.reasons.file, staging / card.reasons.file)
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
