"""Batch-size buckets: every batch padded up to one of a few sizes, so that a model sees
only those shapes (what CUDA graphs and TensorRT's profiles need), with the same answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from app.serving.io_binding import PINNED
from app.serving.providers import ProviderChoice
from app.serving.repository import VersionDir, discover, read_card
from app.serving.runtime import ModelRuntime
from app.settings import Settings
from tests import model_factory
from tests.conftest import REPO_ROOT, transaction

CPU = ProviderChoice(["CPUExecutionProvider"], "test")


class ShapeRecorder:
    """The real session, noting the batch size of every run it is given."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.sizes: set[int] = set()

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray], *args: Any) -> Any:
        self.sizes |= {len(rows) for rows in feeds.values()}
        return self.session.run(outputs, feeds, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def load(folder: Path, **settings: Any) -> ModelRuntime:
    config = Settings(_env_file=None, intra_op_threads=1, **settings).registry_config()
    version = VersionDir(folder.parent.name, int(folder.name), folder)
    return ModelRuntime.load(read_card(version), version.onnx_path, config.runtime, CPU)


def test_settings_read_buckets_and_the_full_batch_is_always_one(tmp_path: Path) -> None:
    assert Settings(_env_file=None, batch_buckets="16, 1,4").batch_buckets == [16, 1, 4]
    folder = model_factory.fraud_model(tmp_path, max_batch_size=32)
    assert load(folder, batch_buckets="16,1,4,64").buckets == [1, 4, 16, 32]
    assert load(folder).buckets == []
    # CUDA graphs need fixed buffers: asking for them binds them.
    runtime = Settings(_env_file=None, cuda_graphs=True, io_binding="off").registry_config()
    assert runtime.runtime.io_binding == "on" and runtime.device.cuda_graphs


def test_padded_batches_answer_as_unpadded_ones_and_repeat_their_shapes(tmp_path: Path) -> None:
    folder = model_factory.fraud_model(tmp_path, max_batch_size=32)
    plain, bucketed = load(folder), load(folder, batch_buckets="1,4,16")
    recorder = ShapeRecorder(bucketed.session)
    bucketed.session = recorder  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    width = plain.model_card.input.shape[1]
    for count in range(1, 33):
        rows = rng.uniform(0, 50, size=(count, width)).astype(np.float32)
        np.testing.assert_allclose(bucketed.run_batch(rows), plain.run_batch(rows), rtol=1e-6)
    assert recorder.sizes == {1, 4, 16, 32}


def test_io_binding_answers_as_plain_runs_from_buffers_made_once(tmp_path: Path) -> None:
    folder = model_factory.fraud_model(tmp_path, max_batch_size=32)
    plain, bound = load(folder), load(folder, io_binding="on")
    assert bound.buckets == [1, 2, 4, 8, 16, 32]  # powers of two where none are set
    assert bound._bound is not None
    pointers = {size: b.outputs[0].data_ptr() for size, b in bound._bound._buffers.items()}
    rng = np.random.default_rng(2)
    width = plain.model_card.input.shape[1]
    for count in (1, 3, 5, 17, 32, 3):
        rows = rng.uniform(0, 50, size=(count, width)).astype(np.float32)
        np.testing.assert_allclose(bound.run_batch(rows), plain.run_batch(rows), rtol=1e-6)
    after = {size: b.outputs[0].data_ptr() for size, b in bound._bound._buffers.items()}
    assert after == pointers  # the same buffers, written in place
    assert bound.input_memory == "cpu" and plain.input_memory is None


def test_without_pinned_memory_inputs_are_bound_on_the_device(tmp_path, caplog) -> None:
    """Pinned host memory is a CUDA build's; elsewhere the buffer falls back to the device's."""
    bound = load(model_factory.fraud_model(tmp_path), io_binding="on")._bound
    assert bound is not None
    bound.input_device = PINNED  # as on CUDA without graphs
    arg = bound._session.get_inputs()[0]
    buffer = bound._input_buffer(arg, 4, "cpu", 0)
    assert buffer.device_name() == "cpu" and buffer.shape() == [4, *arg.shape[1:]]
    assert bound.input_device == "cpu" and "no pinned host memory" in caplog.text


@pytest.mark.parametrize("with_score_output", [True, False])
@pytest.mark.parametrize("settings", [{"batch_buckets": "8"}, {"io_binding": "on"}])
def test_padded_and_bound_runs_give_the_reasons_unchanged(
    settings: dict[str, str], with_score_output: bool
) -> None:
    versions = [
        v
        for v in discover(REPO_ROOT / "models").get("fraud", [])
        if (reasons := read_card(v).reasons) is not None
        and (reasons.score_output is not None) == with_score_output
    ]
    if not versions:
        pytest.skip("no committed fraud version with such a reasons graph")
    folder = versions[-1].onnx_path.parent
    plain, changed = load(folder), load(folder, **settings)
    width = plain.model_card.input.shape[1]
    rows = np.random.default_rng(3).uniform(0, 5, size=(5, width)).astype(np.float32)
    explained = changed.run_explained(rows)
    assert explained.shape == plain.run_explained(rows).shape
    np.testing.assert_allclose(explained, plain.run_explained(rows), rtol=1e-5, atol=1e-6)


def test_the_app_serves_through_bound_padded_runs_with_the_same_answers(make_client) -> None:
    body = {"transactions": [transaction(amount=float(a)) for a in (5, 80, 400)]}
    plain = make_client().post("/v1/fraud/score", json=body).json()["results"]
    bound = make_client(io_binding="on", batch_buckets="2").post("/v1/fraud/score", json=body)
    assert bound.status_code == 200
    for ours, theirs in zip(bound.json()["results"], plain, strict=True):
        assert ours["fraud_probability"] == pytest.approx(theirs["fraud_probability"], rel=1e-6)
