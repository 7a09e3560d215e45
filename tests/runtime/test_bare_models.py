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
    # The fixture model outputs logits: --softmax (softmax=True) says so.
    model = edgetl_runtime.load(getattr(bare, variant), labels=bare.labels, threads=1, softmax=True)
    info = model.info
    assert not info.embedded_metadata
    assert info.input.dtype == dtype and model.input_size == (24, 24)
    assert model.labels == ("background", "scratch", "good")
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (6, 24, 24, 3), dtype=np.uint8)
    scores = model.scores(pixels)
    assert scores.dtype == np.float32 and scores.shape == (6, 3)
    np.testing.assert_allclose(scores, _keras_probs(bare, pixels), atol=atol)
    pred = model.predict(pixels[0])
    assert pred.defect_score == pytest.approx(1 - pred.probabilities["good"], abs=1e-6)  # "good" found by name


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
    labels, note = fit_labels(read_labels(plain), 2, "m")  # 1001-line file, 1000 outputs
    assert labels == ("cat", "dog") and "'background'" in note and "dropped" in note
    assert fit_labels(("cat", "dog"), 2, "m") == (("cat", "dog"), None)


def test_labels_override_for_an_edgetl_model(exported, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("crack\ngood\n")
    model = edgetl_runtime.load(exported.tflite_fp32, labels=labels)
    assert model.labels == ("crack", "good")
    assert set(model.predict(exported.images[0]).probabilities) == {"crack", "good"}


@pytest.mark.parametrize("lines, n_outputs, found", [
    (("cat", "dog"), 3, "3 outputs but the labels file has 2 labels"),  # one short: no "background" is invented
    (("tench", "cat", "dog"), 2, "2 outputs but the labels file has 3 labels"),  # one long, first line not background
    (("cat", "dog"), 5, "5 outputs but the labels file has 2 labels"),
])
def test_labels_that_do_not_fit_are_an_error(lines, n_outputs, found):
    # Before: one line short got "background" prepended and one long lost its first line,
    # silently shifting every label by one.
    with pytest.raises(ValueError, match=found):
        fit_labels(lines, n_outputs, "m.tflite")


def test_labels_mismatch_at_load_names_both_counts(bare, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("scratch\ngood\n")
    with pytest.raises(ValueError, match="3 outputs but the labels file has 2 labels"):
        edgetl_runtime.load(bare.uint8, labels=short)
    extra = tmp_path / "extra.txt"  # 4 lines, the first "background": the ImageNet convention, with a note
    extra.write_text("background\nscratch\ndent\ngood\n")
    model = edgetl_runtime.load(bare.uint8, labels=extra)
    assert model.labels == ("scratch", "dent", "good")
    assert any("'background'" in n for n in model.info.notes)


def test_bare_output_is_read_as_it_is(bare):
    # The fixture's outputs are logits: without softmax=True the runtime returns them unchanged
    # (dequantized), it never guesses from their sum.
    model = edgetl_runtime.load(bare.float32, labels=bare.labels)
    pixels = np.random.default_rng(5).integers(0, 256, (4, 24, 24, 3), dtype=np.uint8)
    logits = bare.keras.predict((pixels.astype(np.float32) - 127.5) / 127.5, verbose=0)
    np.testing.assert_allclose(model.scores(pixels), logits, atol=1e-4)
    assert model.info.spec.output.kind == "probabilities"
    assert edgetl_runtime.load(bare.float32, labels=bare.labels, softmax=True).info.spec.output.kind == "logits"
