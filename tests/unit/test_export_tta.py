"""Test-time augmentation inside the exported graph: the mean over four flips, in TFLite and ONNX."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import edgetl_runtime
from edgetl.cli import main
from edgetl.exporters.tta import with_tta
from edgetl.run import load_run


def _flips_mean(model, x: np.ndarray) -> np.ndarray:
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]
    return np.mean([model.predict(np.ascontiguousarray(v), verbose=0) for v in views], axis=0)


def _pixels(n: int = 6) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, 32, 32, 3)).astype(np.uint8)


def _untrained():
    """A small classifier whose scores are far from 0 and 1, so that averaging shows."""
    from edgetl._tf import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((32, 24, 3))
    h = k.layers.Rescaling(1 / 255.0)(inputs)
    h = k.layers.Conv2D(4, 3, strides=2, activation="relu")(h)
    h = k.layers.Flatten()(h)  # position-sensitive: a flip changes the scores
    return k.Model(inputs, k.layers.Dense(3, activation="softmax")(h))


def test_with_tta_is_the_mean_of_the_models_scores_over_the_four_flips():
    model = _untrained()
    x = np.random.default_rng(3).integers(0, 256, (5, 32, 24, 3)).astype(np.float32)  # not square
    tta = with_tta(model)
    assert tta.input_shape == model.input_shape and tta.output_shape == model.output_shape
    got = tta.predict(x, verbose=0)
    np.testing.assert_allclose(got, _flips_mean(model, x), atol=1e-6)
    assert not np.allclose(got, model.predict(x, verbose=0), atol=1e-3)  # the flips do change the scores


@pytest.mark.parametrize("fmt,quant", [("tflite", "fp32"), ("onnx", "fp32"), ("tflite", "int8")])
def test_export_tta_runs_the_averaging_in_the_file_and_says_so(tiny_run, tmp_path, fmt, quant):
    out = tmp_path / f"model-tta.{'onnx' if fmt == 'onnx' else 'tflite'}"
    result = CliRunner().invoke(main, ["export", str(tiny_run), "--format", fmt, "--quant", quant, "--tta",
                                       "--json", "-o", str(out)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["export"]["tta"] is True and payload["validation"]["passed"]
    model = edgetl_runtime.load(out)
    assert model.info.export.tta is True
    pixels = _pixels()
    expected = _flips_mean(load_run(tiny_run).load_model(), pixels.astype(np.float32))
    atol = 1e-4 if quant == "fp32" else 0.06
    np.testing.assert_allclose(model.scores(pixels), expected, atol=atol)
