"""Execution provider options built for a GPU. These tests check what is asked of ONNX
Runtime; whether TensorRT accepts it can only be seen on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.model_card import HalfPrecisionGraph, ModelCard
from app.serving.config import DeviceConfig
from app.serving.providers import (
    TENSORRT,
    ProviderChoice,
    choose_providers,
    cuda_options,
    tensorrt_options,
)
from tests.model_factory import image_model


def test_tensorrt_keeps_its_engines_and_timings_on_disk(tmp_path: Path) -> None:
    options = tensorrt_options(
        DeviceConfig(tensorrt=True, cuda_device_id=1, tensorrt_cache=tmp_path)
    )
    assert options == {
        "device_id": "1",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(tmp_path),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(tmp_path),
    }
    assert tensorrt_options(DeviceConfig(tensorrt=True)) == {"device_id": "0"}


def test_each_model_gives_tensorrt_one_profile_up_to_its_full_batch() -> None:
    cuda = ("CUDAExecutionProvider", {"device_id": "0"})
    choice = ProviderChoice([(TENSORRT, {"device_id": "0"}), cuda, "CPUExecutionProvider"], "r")
    shaped = choice.shaped_for("pixels", [32, 32, 3], 64)
    trt, *others = shaped.providers
    assert trt == (
        TENSORRT,
        {
            "device_id": "0",
            "trt_profile_min_shapes": "pixels:1x32x32x3",
            "trt_profile_opt_shapes": "pixels:64x32x32x3",
            "trt_profile_max_shapes": "pixels:64x32x32x3",
        },
    )
    assert others == [cuda, "CPUExecutionProvider"] and shaped.reason == "r"
    assert choice.providers[0] == (TENSORRT, {"device_id": "0"})  # the shared choice is untouched


def test_without_tensorrt_a_models_providers_are_the_choice() -> None:
    cpu = choose_providers(DeviceConfig(device="cpu"))
    assert cpu.shaped_for("features", [15], 1024).providers == ["CPUExecutionProvider"]


def test_cuda_graphs_are_asked_of_the_cuda_provider_and_the_settings_options_win() -> None:
    assert cuda_options(DeviceConfig()) == {"device_id": "0"}
    graphs = DeviceConfig(cuda_graphs=True, cuda_provider_options={"arena_extend_strategy": "1"})
    assert cuda_options(graphs) == {
        "device_id": "0",
        "enable_cuda_graph": "1",
        "arena_extend_strategy": "1",
    }


def _card_with_fp16(tmp_path: Path, fp16: bool) -> ModelCard:
    card = ModelCard.model_validate_json((image_model(tmp_path) / "model.json").read_text())
    if not fp16:
        return card
    half = HalfPrecisionGraph(
        parity_tolerance=1e-2, parity_max_abs_diff=1e-3, largest_activation=30.0
    )
    return card.model_copy(update={"fp16": half})


@pytest.mark.parametrize("card_has_fp16", [True, False])
def test_a_cpu_serves_float32_whatever_the_card_has(tmp_path: Path, card_has_fp16: bool) -> None:
    card = _card_with_fp16(tmp_path, card_has_fp16)
    cpu = choose_providers(DeviceConfig(fp16=True))  # no GPU here: the CPU, fp16 off
    graph, precision, choice = cpu.graph_for(card, tmp_path / "model.onnx")
    assert (graph.name, precision, choice) == ("model.onnx", "fp32", cpu)


def test_cuda_serves_the_cards_float16_graph_where_allowed(tmp_path: Path) -> None:
    cuda = ProviderChoice([("CUDAExecutionProvider", {"device_id": "0"})], "r", fp16=True)
    onnx_path = tmp_path / "model.onnx"
    graph, precision, choice = cuda.graph_for(_card_with_fp16(tmp_path, True), onnx_path)
    assert (graph, precision, choice) == (tmp_path / "model.fp16.onnx", "fp16", cuda)
    # No float16 graph on the card, or float16 turned off: float32.
    assert cuda.graph_for(_card_with_fp16(tmp_path, False), onnx_path)[:2] == (onnx_path, "fp32")
    off = ProviderChoice(cuda.providers, "r", fp16=False)
    assert off.graph_for(_card_with_fp16(tmp_path, True), onnx_path)[:2] == (onnx_path, "fp32")


def test_tensorrt_builds_float16_engines_from_the_float32_graph(tmp_path: Path) -> None:
    cuda = ("CUDAExecutionProvider", {"device_id": "0"})
    trt = ProviderChoice([(TENSORRT, {"device_id": "0"}), cuda], "r", fp16=True)
    onnx_path = tmp_path / "model.onnx"
    graph, precision, choice = trt.graph_for(_card_with_fp16(tmp_path, True), onnx_path)
    assert (graph, precision) == (onnx_path, "fp16")
    assert choice.providers == [(TENSORRT, {"device_id": "0", "trt_fp16_enable": "1"}), cuda]
    assert trt.graph_for(_card_with_fp16(tmp_path, False), onnx_path)[2] == trt
