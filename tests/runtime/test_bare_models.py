"""Third-party classifiers without edgetl metadata: labels from a file, the rest from the tensors."""

from __future__ import annotations

import numpy as np
import pytest

import edgetl_runtime
from edgetl_runtime.model import fit_labels, read_labels


def _keras_probs(bare, pixels: np.ndarray) -> np.ndarray:
    logits = bare.keras.predict((pixels.astype(np.float32) - 127.5) / 127.5, verbose=0)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("variant, dtype, atol", [("float32", np.float32, 1e-4), ("uint8", np.uint8, 0.08), ("int8", np.int8, 0.08)])
def test_bare_model_uses_mobilenet_convention_and_dequantizes(bare, variant, dtype, atol):
    model = edgetl_runtime.load(getattr(bare, variant), labels=bare.labels, threads=1)
    info = model.info
    assert not info.embedded_metadata
    assert info.input.dtype == dtype and model.input_size == (24, 24)
    # 2 lines in the labels file for 3 outputs: class 0 is the classic "background"
    assert model.labels == ("background", "scratch", "good")
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    scores = model.scores(pixels)
    assert scores.dtype == np.float32 and scores.shape == (6, 3)
    np.testing.assert_allclose(scores, _keras_probs(bare, pixels), atol=atol)
    pred = model.predict(pixels[0])
    assert pred.defect_score == pytest.approx(1 - pred.scores["good"], abs=1e-6)  # "good" found by name


def test_mean_std_override(bare):
    default = edgetl_runtime.load(bare.float32, labels=bare.labels)
    same = edgetl_runtime.load(bare.float32, labels=bare.labels, mean=127.5, std=127.5)
    other = edgetl_runtime.load(bare.float32, labels=bare.labels, mean=0.0, std=255.0)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 24, 24, 3), dtype=np.uint8)
    np.testing.assert_allclose(default.scores(pixels), same.scores(pixels), atol=1e-6)
    assert other.info.spec.input.std == (255.0, 255.0, 255.0)
    assert not np.allclose(default.scores(pixels), other.scores(pixels), atol=1e-4)


def test_labels_file_formats(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("background\ncat\ndog\n\n")
    numbered = tmp_path / "numbered.txt"
    numbered.write_text("0  cat\n1: dog\n")
    assert read_labels(plain) == ("background", "cat", "dog")
    assert read_labels(numbered) == ("cat", "dog")
    assert fit_labels(read_labels(plain), 2, "m") == ("cat", "dog")  # 1001-line file, 1000 outputs
    assert fit_labels(("cat", "dog"), 3, "m") == ("background", "cat", "dog")
    with pytest.raises(ValueError, match="5 outputs but 2 labels"):
        fit_labels(("cat", "dog"), 5, "m")


def test_labels_override_for_an_edgetl_model(exported, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("crack\ngood\n")
    model = edgetl_runtime.load(exported.tflite_fp32, labels=labels)
    assert model.labels == ("crack", "good")
    assert set(model.predict(exported.images[0]).scores) == {"crack", "good"}
