"""Errors a user can act on: Edge TPU models without a TPU, broken files, missing engines."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import edgetl_runtime
from edgetl_runtime.backends import DeviceError, parse_device
from edgetl_runtime.errors import EdgeTpuUnavailable, ModelFormatError


def test_edgetpu_model_without_delegate_says_how_to_fix(edgetpu_model):
    with pytest.raises(EdgeTpuUnavailable) as err:
        edgetl_runtime.load(edgetpu_model)  # device="cpu" cannot run it either
    text = str(err.value)
    assert "compiled for the Edge TPU" in text and str(edgetpu_model) in text
    assert "libedgetpu1-std" in text and "plug" in text and "--format tflite" in text


def test_edgetpu_device_requested_without_tpu(exported):
    with pytest.raises(EdgeTpuUnavailable, match="libedgetpu"):
        edgetl_runtime.load(exported.tflite_int8, device="edgetpu:usb:0")


@pytest.mark.parametrize("kind", ["truncated", "foreign", "empty"])
def test_broken_file_is_not_a_model(exported, tmp_path, kind):
    path = tmp_path / "broken.tflite"
    data = exported.tflite_int8.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 3], "foreign": b"\x89PNG\r\n\x1a\n" + b"x" * 100, "empty": b""}[kind])
    with pytest.raises(ModelFormatError, match="not a"):
        edgetl_runtime.load(path)


def test_truncated_onnx_is_not_a_model(exported, tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(exported.onnx.read_bytes()[:500])
    with pytest.raises(ModelFormatError, match="not a"):
        edgetl_runtime.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="no such model file"):
        edgetl_runtime.load(tmp_path / "nope.tflite")


@pytest.mark.parametrize("device", ["gpu", "edgetpu:wifi", "cpu:1", "cuda:x"])
def test_bad_device_string(device):
    with pytest.raises(ValueError, match="device"):
        parse_device(device)


def test_wrong_device_for_format(exported):
    with pytest.raises(ValueError, match="--format onnx"):
        edgetl_runtime.load(exported.tflite_fp32, device="cuda")
    with pytest.raises(ValueError, match="Edge TPU"):
        edgetl_runtime.load(exported.onnx, device="edgetpu")


@pytest.mark.parametrize("device, provider", [("cuda", "CUDAExecutionProvider"), ("tensorrt", "TensorrtExecutionProvider")])
def test_missing_gpu_provider_is_an_error_unless_the_fallback_is_allowed(exported, device, provider):
    # Before: device="cuda" without a GPU silently ran on the CPU (a `fallback` flag nobody read).
    import onnxruntime as ort

    if provider in ort.get_available_providers():  # a GPU build: the accelerator really runs
        assert edgetl_runtime.load(exported.onnx, device=device).info.device.startswith(device)
        return
    with pytest.raises(DeviceError, match=f"{provider}.*--allow-cpu-fallback"):
        edgetl_runtime.load(exported.onnx, device=device)
    model = edgetl_runtime.load(exported.onnx, device=device, allow_cpu_fallback=True)
    assert model.info.device == "cpu" and model.info.provider == "CPUExecutionProvider"
    assert any("fallback was allowed" in n for n in model.info.notes)
    assert model.predict(exported.images[0]).top_class in ("defect", "good")


def test_bare_model_without_labels_gets_numbered_classes(bare):
    model = edgetl_runtime.load(bare.uint8)
    assert model.labels == ("0", "1", "2") and any("--labels" in n for n in model.info.notes)


_BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
"""


@pytest.mark.parametrize(
    "model_attr, blocked, extra",
    [
        ("tflite_int8", ["ai_edge_litert", "tflite_runtime", "tensorflow"], "edgetl-runtime[litert]"),
        ("onnx", ["onnxruntime"], "edgetl-runtime[onnx]"),
    ],
)
def test_missing_engine_names_the_extra(exported, model_attr, blocked, extra):
    code = _BLOCK.format(blocked=set(blocked)) + textwrap.dedent(
        f"""
        import edgetl_runtime
        from edgetl_runtime.errors import EngineNotInstalled
        try:
            edgetl_runtime.load({str(getattr(exported, model_attr))!r})
        except EngineNotInstalled as exc:
            print("MESSAGE", exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "MESSAGE" in out.stdout and extra in out.stdout


def test_litert_notice_is_dropped_and_other_native_output_kept(exported, tmp_path):
    # LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." from C++ on the first
    # interpreter of a process; edgetl-runtime drops that one line, and nothing else.
    code = textwrap.dedent(f"""
        import os, edgetl_runtime
        from edgetl_runtime.backends.litert import quiet_native_stderr
        edgetl_runtime.load({str(exported.tflite_fp32)!r})
        with quiet_native_stderr():
            os.write(2, b"kept line\\nINFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
    """)
    quiet = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert "XNNPACK delegate" not in quiet.stderr and "kept line" in quiet.stderr
    loud = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "EDGETL_NATIVE_LOGS": "1"})  # fmt: skip
    assert "XNNPACK delegate" in loud.stderr
