"""QAT on the tiny model and on a real MobileNetV3 backbone (hard-swish from TFOpLambda/Multiply)."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.exporters import ExportOptions
from edgetl.exporters.qat import QatError, annotate, quantize_aware
from edgetl.run import load_run


def test_annotation_leaves_the_rescaling_layer_float_and_keeps_weights(tiny_run):
    model = load_run(tiny_run).load_model()
    annotated, left_float = annotate(model)
    assert left_float == ("normalize",)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(annotated(x).numpy(), model(x).numpy(), atol=1e-6)


def test_qat_needs_labelled_images(tiny_run):
    model = load_run(tiny_run).load_model()
    with pytest.raises(QatError, match="labelled training images"):
        quantize_aware(model, np.zeros((2, 32, 32, 3), np.uint8), np.array([-1, -1]))


def test_qat_refuses_a_nested_model_naming_the_layer(tiny_run):
    from edgetl._tf import keras

    k = keras()
    inner = load_run(tiny_run).load_model()
    inputs = k.Input((32, 32, 3))
    outer = k.Model(inputs, inner(inputs))
    with pytest.raises(QatError, match=f"layer '{inner.name}' is a nested model"):
        annotate(outer)


@pytest.mark.slow
def test_qat_on_mobilenet_v3_small_converts_to_full_int8_and_runs(tmp_path):
    import edgetl_runtime
    from edgetl.backbones import load_backbone
    from edgetl._tf import keras
    from edgetl.exporters import TARGETS
    from edgetl.exporters.edgetpu import check_compatibility
    from edgetl_runtime.contract import ExportInfo, InputSpec, ModelSpec

    k = keras()
    # At 32 px the converter left a float DEQUANTIZE (op #105 of 164, found by check_compatibility); 64 px maps fully.
    backbone = load_backbone("mobilenet_v3_small", weights=None, input_size=64)
    h = k.layers.GlobalAveragePooling2D()(backbone.output)
    model = k.Model(backbone.input, k.layers.Dense(2, activation="softmax")(h))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)

    result = quantize_aware(model, pixels, np.array([0, 1] * 4), epochs=1, batch_size=8)
    assert any("multiply" in name or "tf." in name for name in result.float_layers)  # hard-swish pieces

    target = TARGETS["tflite"]
    spec = ModelSpec(labels=("defect", "good"), good_labels=("good",), input=InputSpec(64, 64))
    out = tmp_path / "v3.tflite"
    data = target.convert(result.model, ExportOptions.for_qat(), pixels)
    out.write_bytes(target.embed(data, spec, ExportInfo("tflite", "qat", io_type="uint8")))
    report = check_compatibility(out)
    assert report.fully_mapped, report.summary()
    scores = edgetl_runtime.load(out).scores(pixels[:2])
    assert scores.shape == (2, 2) and np.all(np.isfinite(scores))


def _fresh_quantized(model):
    from edgetl.exporters.qat import quantized

    return quantized(annotate(model)[0])


def test_calibrated_ranges_are_the_activations_min_max_not_tfmots_initial_six(tiny_run):
    from edgetl._tf import keras
    from edgetl.exporters.qat import _moving_average_ranges, calibrate_ranges

    model = load_run(tiny_run).load_model()
    pixels = np.random.default_rng(1).uniform(0, 255, (24, 32, 32, 3)).astype(np.float32)
    qmodel = _fresh_quantized(model)
    ranges = {r["max_var"].name.split("/")[0]: r for r in _moving_average_ranges(qmodel)}
    assert set(ranges) == {"quant_relu1", "quant_relu2", "quant_relu3", "quant_pool", "quant_scores"}
    assert all(float(r["max_var"].numpy()) == 6.0 for r in ranges.values())  # tfmot's start: what QAT used to keep
    assert calibrate_ranges(qmodel, pixels, batch_size=8) == len(ranges)

    probe = keras().Model(model.input, [model.get_layer(name).output for name in ("relu3", "pool")])
    relu3, pool = (np.asarray(t) for t in probe(pixels))
    kernel, bias = model.get_layer("scores").get_weights()
    logits = pool @ kernel + bias
    for name, values in (("quant_relu3", relu3), ("quant_pool", pool), ("quant_scores", logits)):
        low, high = float(ranges[name]["min_var"].numpy()), float(ranges[name]["max_var"].numpy())
        span = float(max(values.max(), 0) - min(values.min(), 0))
        assert high == pytest.approx(float(max(values.max(), 0.0)), abs=0.05 * span), name
        assert low == pytest.approx(float(min(values.min(), 0.0)), abs=0.05 * span), name


def test_qat_follows_the_float_model_closely_on_held_out_images(tiny_run, tiny_dataset):
    """The drop is bounded: with tfmot's ±6 starting ranges the fake-quant scores were off by up to 0.1."""
    from edgetl_runtime.preprocess import load_image

    model = load_run(tiny_run).load_model()
    files = sorted(tiny_dataset.glob("*/*.png"))
    pixels = np.stack([load_image(str(p), (32, 32)) for p in files]).astype(np.uint8)
    labels = np.array([0 if p.parent.name == "defect" else 1 for p in files])
    train, held = np.arange(len(files)) % 4 != 0, np.arange(len(files)) % 4 == 0
    result = quantize_aware(model, pixels[train], labels[train], epochs=2, batch_size=8)
    float_scores = model(pixels[held].astype(np.float32)).numpy()
    qat_scores = result.model(pixels[held].astype(np.float32), training=False).numpy()
    assert np.abs(qat_scores - float_scores).max() < 0.01
    assert (qat_scores.argmax(1) == float_scores.argmax(1)).mean() == 1.0
