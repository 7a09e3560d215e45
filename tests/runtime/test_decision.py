"""The decision contract on the device: scores as the model gives them, the verdict from the stored
threshold, and no verdict that claims more than was measured."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import edgetl_runtime
from edgetl_runtime.cli import main
from edgetl_runtime.model import ClassProbabilities

from .conftest import tf_modules


@pytest.fixture(scope="module")
def google_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare uint8 MobileNetV2 with 1001 softmax outputs, quantized as Google's int8 ImageNet model.

    Like Google's file, its uint8 output (scale 1/256) does not sum to 1 after dequantization:
    the runtime once re-applied a softmax to such outputs, turning 0.789 into 0.002.
    """
    tf, k = tf_modules()
    k.utils.set_random_seed(0)
    base = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=1001,
                                      classifier_activation=None)  # fmt: skip
    logits = base.output * 40.0  # confident, peaked outputs like a trained model's
    model = k.Model(base.input, k.layers.Softmax()(logits))
    rng = np.random.default_rng(0)
    calib = rng.uniform(-1, 1, (8, 96, 96, 3)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8
    path = tmp_path_factory.mktemp("google_like") / "mobilenet_v2_1001_uint8.tflite"
    path.write_bytes(converter.convert())
    return path


def _raw_dequantized(path: Path, pixels: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    rows = []
    for image in pixels:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append((interpreter.get_tensor(out["index"])[0].astype(np.float32) - zero) * np.float32(scale))
    return np.stack(rows)


def test_bare_uint8_imagenet_model_reports_the_dequantized_output_unchanged(google_like, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(1001)))
    model = edgetl_runtime.load(google_like, labels=labels, threads=1)
    pixels = np.random.default_rng(1).integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    raw = _raw_dequantized(google_like, pixels)
    sums = raw.sum(axis=1)
    assert np.any(np.abs(sums - 1) > 0.05), sums  # the case the old sum heuristic re-softmaxed
    np.testing.assert_array_equal(model.scores(pixels), raw)
    pred = model.predict(pixels[0])
    top = int(raw[0].argmax())
    assert pred.top_class == f"class {top}" and pred.top_probability == pytest.approx(float(raw[0, top]))
    assert pred.verdict is None and pred.defect_score is None  # no good class named: no verdict
    assert isinstance(pred.probabilities, ClassProbabilities) and len(pred.probabilities) == 1001
    assert pred.probabilities[f"class {top}"] == pytest.approx(float(raw[0, top]))


def test_bench_runs_a_bare_model_without_labels(google_like):
    result = CliRunner().invoke(main, ["bench", str(google_like), "--runs", "3", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"] == 3 and report["provider"] == "xnnpack"  # stdout is JSON only
    assert any("named by their output index" in n for n in report["notes"])


def test_predict_threshold_changes_the_verdict_only(exported):
    image = exported.images[0]
    low = edgetl_runtime.load(exported.tflite_fp32, threshold=0.0).predict(image)
    high = edgetl_runtime.load(exported.tflite_fp32, threshold=1.0).predict(image)
    assert low.verdict == "defect" and low.threshold == 0.0
    assert (high.verdict == "good") == (high.defect_score < 1.0)
    assert (low.top_class, low.top_probability, low.defect_score) == (high.top_class, high.top_probability, high.defect_score)
    cli = CliRunner().invoke(main, ["predict", str(exported.tflite_fp32), image, "--threshold", "0", "--json"])
    assert cli.exit_code == 0 and json.loads(cli.stdout)["verdict"] == "defect"


def test_bench_with_another_devices_profile_is_not_a_pass(exported, tmp_path):
    # Before: `bench --device raspberry-pi-4` on an x86 workstation printed PASS and exited 0.
    from edgetl_runtime.profiles import HostInfo, load_profile

    profile = load_profile("raspberry-pi-4")
    if profile.detect.check(HostInfo.probe())[0]:
        pytest.fail("this test assumes it does not run on a Raspberry Pi 4")
    args = ["bench", str(exported.tflite_int8), "--profile", "raspberry-pi-4", "--device", "cpu", "--runs", "3",
            "--warmup", "0", "--json"]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)["verdict"]
    assert verdict["status"] == "NOT THIS DEVICE" and not verdict["passed"] and not verdict["forced"]
    assert "architecture" in verdict["reasons"][0] and "--force" in verdict["reasons"][1]
    text = CliRunner().invoke(main, args[:-1])
    assert text.exit_code == 1 and "NOT THIS DEVICE" in text.stdout and "PASS" not in text.stdout
    forced = CliRunner().invoke(main, [*args, "--force"])
    verdict = json.loads(forced.stdout)["verdict"]
    assert verdict["forced"] and verdict["reasons"][0].startswith("forced: this host is not a raspberry-pi-4")
    assert verdict["status"] in ("PASS", "FAIL") and forced.exit_code == (0 if verdict["passed"] else 1)


def test_info_summarises_a_long_label_list(google_like, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(1001)))
    result = CliRunner().invoke(main, ["info", str(google_like), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())  # long values wrap at 100 columns
    assert "labels 1001 labels: class 0, class 1" in text and "class 1000" in text and "class 500" not in text
    assert max(len(line) for line in result.stdout.splitlines()) <= 100


def test_an_accelerator_profile_off_its_device_is_not_this_device(exported):
    # Checked before the model is opened: no "install libedgetpu" error for a Coral profile on a PC.
    from edgetl_runtime.profiles import HostInfo, load_profile

    if load_profile("coral-usb").detect.check(HostInfo.probe())[0]:
        pytest.fail("this test assumes no Coral USB Accelerator is plugged in")
    result = CliRunner().invoke(main, ["bench", str(exported.tflite_int8), "--profile", "coral-usb", "--json"])
    assert result.exit_code == 1, result.output
    verdict = json.loads(result.stdout)["verdict"]
    assert verdict["status"] == "NOT THIS DEVICE" and "Edge TPU on usb not found" in verdict["reasons"][0]
    assert CliRunner().invoke(main, ["bench", str(exported.tflite_int8), "--force"]).exit_code == 2  # needs --profile


def test_a_model_without_good_classes_has_no_verdict_metrics(google_like, tmp_path):
    # Before: every image counted as a defect, and bench --data reported accuracy 1.0 on defect-only truth.
    from PIL import Image

    for name in ("0", "1"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (96, 96), (40, 80, 120)).save(tmp_path / "data" / name / "a.png")
    result = CliRunner().invoke(main, ["bench", str(google_like), "--data", str(tmp_path / "data"), "--runs", "2",
                                       "--warmup", "0", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert metrics["decision_accuracy"] is None and metrics["defect_recall"] is None and metrics["confusion"] is None
    assert metrics["class_accuracy"] in (0.0, 0.5, 1.0) and metrics["n"] == 2


def test_quiet_and_verbose(exported):
    both = CliRunner().invoke(main, ["info", str(exported.tflite_int8), "-q", "-v"])
    assert both.exit_code == 2 and "cannot be combined" in both.output
    verbose = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), exported.images[0], "-v"])
    assert verbose.exit_code == 0 and "engine litert, provider xnnpack" in verbose.stderr
    plain = CliRunner().invoke(main, ["predict", str(exported.tflite_int8), exported.images[0]])
    assert "engine litert" not in plain.stderr  # -v does not stick to the next invocation
