"""Conformance: every backend that runs here gives the Keras model's answers through one API."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import edgetl_runtime
from edgetl_runtime.backends import Backend

# (fixture attribute, device, tolerance on probabilities vs Keras)
BACKENDS = [
    pytest.param(("tflite_fp32", "cpu", 1e-4), id="litert-fp32"),
    pytest.param(("tflite_int8", "cpu", 0.08), id="litert-int8"),
    pytest.param(("onnx", "cpu", 1e-4), id="onnxruntime-cpu"),
]


@pytest.fixture(scope="module", params=BACKENDS)
def case(request, exported):
    name, device, atol = request.param
    return edgetl_runtime.load(getattr(exported, name), device=device, threads=1), exported, atol


def test_backend_follows_protocol(case):
    model, _, _ = case
    assert isinstance(model._backend, Backend)
    assert model.info.spec.labels == ("defect", "good")
    assert model.info.embedded_metadata
    assert model.info.device == "cpu"
    assert model.info.to_dict()["input"]["shape"][1:] == [32, 32, 3]


def test_scores_match_keras(case):
    model, exported, atol = case
    pixels = np.stack([model.pixels(p) for p in exported.images])
    scores = model.scores(pixels)
    assert scores.dtype == np.float32 and scores.shape == (len(pixels), 2)
    np.testing.assert_allclose(scores, exported.reference, atol=atol)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=0.02)


def test_predict_gives_label_threshold_and_timings(case):
    model, exported, atol = case
    for path, ref in zip(exported.images, exported.reference):
        pred = model.predict(path)
        assert pred.top_class in ("defect", "good") and pred.verdict in ("defect", "good")
        assert pred.probabilities["defect"] == pytest.approx(float(ref[0]), abs=atol)
        assert pred.defect_score == pytest.approx(1 - pred.probabilities["good"], abs=1e-6)
        assert pred.is_defect == (pred.defect_score >= 0.5)
        assert set(pred.timings) == {"preprocess", "inference", "postprocess"}
        assert all(v >= 0 for v in pred.timings.values())


def test_every_input_kind_gives_the_same_answer(case):
    model, exported, _ = case
    path = exported.images[0]
    data = open(path, "rb").read()
    pil = Image.open(io.BytesIO(data))
    array = np.asarray(Image.open(path).convert("RGB"))
    results = [model.predict(x).probabilities.to_dict() for x in (path, data, pil, array, model.pixels(path))]
    for scores in results[1:]:
        assert scores == pytest.approx(results[0], abs=1e-6)


def test_predict_batch_equals_predict(case):
    model, exported, _ = case
    batch = model.predict_batch(exported.images)
    single = [model.predict(p) for p in exported.images]
    assert [b.top_class for b in batch] == [s.top_class for s in single]
    for b, s in zip(batch, single):
        assert b.probabilities.to_dict() == pytest.approx(s.probabilities.to_dict(), abs=1e-5)
    assert model.predict_batch([]) == []


def test_labels_agree_with_keras(case):
    model, exported, _ = case
    labels = [p.top_class for p in model.predict_batch(exported.images)]
    expected = [("defect", "good")[i] for i in exported.reference.argmax(axis=1)]
    margin = np.abs(exported.reference[:, 0] - 0.5) > 0.05  # near-ties may flip under int8
    assert [a for a, m in zip(labels, margin) if m] == [b for b, m in zip(expected, margin) if m]
