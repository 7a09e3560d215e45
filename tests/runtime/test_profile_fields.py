"""Every [runtime] field of a device profile reaches the engine that runs the model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import edgetl_runtime
from edgetl_runtime.errors import EdgeTpuUnavailable
from edgetl_runtime.profiles import load_profile

REPO_DEVICES = Path(__file__).resolve().parents[2] / "devices"


def _variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (REPO_DEVICES / f"{name}.toml").read_text()
    assert old in text, old
    path = tmp_path / f"{name}-variant.toml"
    path.write_text(text.replace(f'name = "{name}"', f'name = "{name}-variant"').replace(old, new))
    return path


def test_threads_reach_the_litert_interpreters(exported, tmp_path):
    profile = load_profile(_variant(tmp_path, "cpu-x86_64", "threads = 2", "threads = 3"))
    model = edgetl_runtime.load(exported.tflite_int8, profile=profile)
    assert model.info.threads == 3 and model._backend.interpreter_options["num_threads"] == 3
    # An explicit argument beats the profile.
    assert edgetl_runtime.load(exported.tflite_int8, profile=profile, threads=1).info.threads == 1


def test_xnnpack_option_reaches_the_interpreter(exported, tmp_path):
    from ai_edge_litert.interpreter import OpResolverType

    on = edgetl_runtime.load(exported.tflite_fp32, profile="cpu-x86_64")
    assert "experimental_op_resolver_type" not in on._backend.interpreter_options
    off_profile = load_profile(_variant(tmp_path, "cpu-x86_64", "xnnpack = true", "xnnpack = false"))
    off = edgetl_runtime.load(exported.tflite_fp32, profile=off_profile)
    resolver = off._backend.interpreter_options["experimental_op_resolver_type"]
    assert resolver == OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    pixels = on.pixels(exported.images[0])[None]  # the builtin kernels compute the same scores
    assert abs(on.scores(pixels) - off.scores(pixels)).max() < 1e-4


def test_tensorrt_cache_path_and_workspace_reach_onnx_runtime(exported):
    model = edgetl_runtime.load(exported.onnx, profile="jetson-orin-nano", allow_cpu_fallback=True)  # no GPU here
    provider, options = model._backend.requested_providers[0]
    assert provider == "TensorrtExecutionProvider"
    assert options["trt_engine_cache_path"] == os.path.expanduser("~/.cache/edgetl/trt")
    assert options["trt_max_workspace_size"] == 2147483648 and options["trt_fp16_enable"] is True
    assert model.info.threads == 6  # the profile's threads: ONNX Runtime's intra-op threads


def test_edgetpu_library_option_is_the_delegate_that_is_loaded(edgetpu_model, tmp_path):
    profile = load_profile(_variant(tmp_path, "coral-usb", 'library = "libedgetpu.so.1"', 'library = "libedgetpu-custom.so.1"'))
    with pytest.raises(EdgeTpuUnavailable, match="libedgetpu-custom.so.1"):
        edgetl_runtime.load(edgetpu_model, profile=profile)


def test_device_field_selects_the_engine(exported):
    # A Coral profile asks for the Edge TPU: a plain int8 model is refused rather than run on the CPU.
    with pytest.raises(EdgeTpuUnavailable):
        edgetl_runtime.load(exported.tflite_int8, profile="coral-usb")
    assert edgetl_runtime.load(exported.tflite_int8, profile="cpu-x86_64").info.device == "cpu"
    # An explicit other device runs without the profile's engine options (no Edge TPU library on the CPU).
    assert edgetl_runtime.load(exported.tflite_int8, profile="coral-usb", device="cpu").info.device == "cpu"


@pytest.mark.parametrize(
    ("fmt_model", "options", "message"),
    [("tflite_fp32", {"trt_fp16_enable": True}, "LiteRT on the CPU has no option"),
     ("onnx", {"xnnpack": False}, "ONNX Runtime on the CPU takes no engine options")],
)
def test_an_option_the_engine_does_not_know_is_an_error(exported, fmt_model, options, message):
    from edgetl_runtime.backends import EngineOptionError

    with pytest.raises(EngineOptionError, match=message):
        edgetl_runtime.load(getattr(exported, fmt_model), engine_options=options)
