"""Execution provider options built for a GPU. These tests check what is asked of ONNX
Runtime; whether TensorRT accepts it can only be seen on a GPU."""

from __future__ import annotations

from pathlib import Path

from app.serving.config import DeviceConfig
from app.serving.providers import (
    TENSORRT,
    ProviderChoice,
    choose_providers,
    cuda_options,
    tensorrt_options,
)


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
