"""Anomaly statistics from good images (issue 13): the numpy fit and scores, the Keras graph, int8 TFLite."""

from __future__ import annotations

import numpy as np
import pytest
from edgetl_runtime.decision import roc_auc

from edgetl.anomaly import (anomaly_model, extract_features, feature_extractor, fit_padim, image_scores,
                            score_maps, tap_layers, with_synthetic_anomalies)
from edgetl.anomaly.fit import threshold_and_width
from edgetl.anomaly.graph import distance_model
from edgetl.backbones import load_backbone
from edgetl.exporters.validate import rank_agreement


def _aligned_part(rng: np.random.Generator, kind: int, defect: bool, size: int = 96) -> np.ndarray:
    """A grey 'cell' with busbars at fixed places and one of two textures; defects: a dark scratch or spot."""
    img = rng.normal(150, 6, (size, size))
    img[:, size // 4 :: size // 4][:, :3] -= 50  # busbars, always at the same columns
    if kind == 1:  # the second kind of good part: a coarse grain texture
        img += np.kron(rng.normal(0, 15, (size // 8, size // 8)), np.ones((8, 8)))
    if defect:
        if rng.random() < 0.5:
            r = int(rng.integers(size // 5, 4 * size // 5))
            img[r : r + 4, size // 6 : 5 * size // 6] = 40.0
        else:
            r, c = (int(v) for v in rng.integers(size // 5, 4 * size // 5, 2))
            img[r : r + 10, c : c + 10] = 245.0
    return np.repeat(img.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)


@pytest.fixture(scope="module")
def lite0_features():
    backbone = load_backbone("efficientnet_lite0", weights="imagenet", input_size=96)
    return feature_extractor(backbone, "efficientnet_lite0")


def test_the_taps_are_the_last_residual_blocks_at_strides_8_16_32():
    backbone = load_backbone("efficientnet_lite0", weights="none", input_size=224)
    assert tap_layers(backbone, "efficientnet_lite0") == ["block04_add", "block10_add", "block14_add"]
    mobilenet = load_backbone("mobilenet_v2", weights="none", input_size=96, alpha=0.35)
    assert len(tap_layers(mobilenet, "mobilenet_v2")) == 3


def test_the_features_share_one_grid_of_a_16th_of_the_input(lite0_features):
    assert tuple(lite0_features.output.shape[1:3]) == (6, 6)
    assert lite0_features.output.shape[-1] == 40 + 112 + 192


def test_a_far_feature_scores_where_it_is_and_two_kinds_are_both_normal():
    rng = np.random.default_rng(0)
    kinds = np.concatenate([rng.normal(0, 1, (60, 3, 3, 8)), rng.normal(6, 1, (60, 3, 3, 8))]).astype(np.float32)
    one, two = fit_padim(kinds, dims=8, clusters=1, clip=0), fit_padim(kinds, dims=8, clusters=2, clip=0)
    assert sorted(two.cluster_sizes) == [60, 60]
    probe = np.concatenate([rng.normal(0, 1, (5, 3, 3, 8)), rng.normal(6, 1, (5, 3, 3, 8))]).astype(np.float32)
    odd = probe[:1].copy()
    odd[0, 2, 1] -= 5.0  # one position far from both kinds (every channel 5 standard deviations off)
    maps = score_maps(two, np.concatenate([probe, odd]))
    assert np.unravel_index(maps[-1].argmax(), maps[-1].shape) == (2, 1)
    assert image_scores(maps)[-1] > 2 * image_scores(maps)[:-1].max()
    # One Gaussian over both kinds is wide: the same odd position stands out less against normal images.
    single = image_scores(score_maps(one, np.concatenate([probe, odd])))
    assert single[-1] / single[:-1].max() < image_scores(maps)[-1] / image_scores(maps)[:-1].max()


def test_clipping_bounds_each_components_share_of_the_distance():
    rng = np.random.default_rng(4)
    good = rng.normal(0, 1, (50, 2, 2, 6)).astype(np.float32)
    odd = good[:1].copy()
    odd[0, 0, 0, 0] += 100.0  # one wild feature
    plain, robust = fit_padim(good, dims=6, clusters=1, clip=0), fit_padim(good, dims=6, clusters=1, clip=2.0)
    assert score_maps(plain, odd)[0, 0, 0] > 20
    assert score_maps(robust, odd)[0, 0, 0] <= 2.0 * np.sqrt(6) + 1e-5


def test_the_keras_graph_scores_as_the_numpy_reference(lite0_features):
    rng = np.random.default_rng(1)
    good = np.stack([_aligned_part(rng, i % 2, False) for i in range(24)])
    test = np.stack([_aligned_part(rng, i % 2, i % 3 == 0) for i in range(9)])
    stats = fit_padim(extract_features(lite0_features, good), dims=64, clusters=2)
    threshold, width = 9.0, 2.0
    model = anomaly_model(lite0_features, stats, threshold, width)
    scores, heat = model.predict_on_batch(test.astype(np.float32))
    distances = score_maps(stats, extract_features(lite0_features, test))
    np.testing.assert_allclose(distance_model(model).predict_on_batch(test.astype(np.float32)), distances,
                               rtol=1e-3, atol=1e-3)
    expected = 1 / (1 + np.exp(-(distances - threshold) / width))
    np.testing.assert_allclose(heat, expected, atol=1e-4)
    np.testing.assert_allclose(scores[:, 1], expected.reshape(len(test), -1).max(1), atol=1e-4)
    np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-6)  # (good, anomaly), like a classifier's
    top3 = anomaly_model(lite0_features, stats, threshold, width, top_k=3).predict_on_batch(test.astype(np.float32))[0]
    np.testing.assert_allclose(top3[:, 1], 1 / (1 + np.exp(-(image_scores(distances, 3) - threshold) / width)),
                               atol=1e-4)  # the mean of the 3 farthest cells


def test_the_detector_saves_and_loads_in_safe_mode_with_its_statistics(lite0_features, tmp_path):
    from edgetl.run import load_keras_model

    rng = np.random.default_rng(3)
    good = np.stack([_aligned_part(rng, i % 2, False) for i in range(12)])
    stats = fit_padim(extract_features(lite0_features, good), dims=16, clusters=1)
    model = anomaly_model(lite0_features, stats, 5.0, 1.0)
    model.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")
    x = good[:3].astype(np.float32)
    for a, b in zip(model.predict_on_batch(x), loaded.predict_on_batch(x)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_scratches_and_spots_are_found_from_good_images_only_also_through_int8_tflite(lite0_features):
    from ai_edge_litert.interpreter import Interpreter

    from edgetl.exporters import ExportOptions
    from edgetl.exporters.tflite import convert

    rng = np.random.default_rng(2)
    good = np.stack([_aligned_part(rng, i % 2, False) for i in range(60)])
    labels = np.array([i % 2 == 0 for i in range(40)])
    test = np.stack([_aligned_part(rng, i % 2 if i % 4 < 2 else 1 - i % 2, d) for i, d in enumerate(labels)])
    fit, held_out = good[:40], good[40:]
    stats = fit_padim(extract_features(lite0_features, fit), dims=32, clusters=2)
    threshold, width = threshold_and_width(
        image_scores(score_maps(stats, extract_features(lite0_features, held_out)), top_k=3), 0.05)
    model = anomaly_model(lite0_features, stats, threshold, width, top_k=3)  # TOPK_V2 through int8 too
    float_scores = model.predict(test.astype(np.float32), verbose=0)[0][:, 1]
    assert roc_auc(labels, float_scores) > 0.95

    # Calibrated on held-out good images (the fitted ones sit closer to their own means than any new
    # image does) and on copies of them with synthetic defects, so that defect scores do not saturate.
    calibration = with_synthetic_anomalies(held_out)
    assert len(calibration) == 2 * len(held_out) and not np.array_equal(calibration[20:], held_out)
    interpreter = Interpreter(model_content=convert(model, ExportOptions(quantization="int8"), calibration))
    interpreter.allocate_tensors()
    (image,) = interpreter.get_input_details()
    score_out = min(interpreter.get_output_details(), key=lambda o: len(o["shape"]))  # (1, 2), not the map
    scale, zero = score_out["quantization"]
    int8_scores = []
    for x in test:
        interpreter.set_tensor(image["index"], x[None].astype(image["dtype"]))
        interpreter.invoke()
        int8_scores.append((float(interpreter.get_tensor(score_out["index"]).reshape(-1)[1]) - zero) * scale)
    assert roc_auc(labels, np.array(int8_scores)) > 0.95
    assert rank_agreement(np.array(int8_scores), float_scores) > 0.9


def test_too_few_good_images_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 good images"):
        fit_padim(np.zeros((1, 2, 2, 3), np.float32))


def test_module_doctest() -> None:
    import doctest

    from edgetl.anomaly import fit, padim
    from edgetl.exporters import validate
    from edgetl_runtime import heatmap

    for module in (padim, fit, validate, heatmap):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_an_interrupted_fit_reuses_the_feature_chunks_already_written(lite0_features, tmp_path, monkeypatch):
    from edgetl.anomaly import fit as fit_module
    from edgetl.anomaly import graph

    rng = np.random.default_rng(5)
    images = np.stack([_aligned_part(rng, 0, False) for i in range(5)])
    monkeypatch.setattr(fit_module, "CHUNK", 2)
    cache = fit_module._FeatureCache(tmp_path, {"images": ["a", "b"]})
    first = cache.extract(lite0_features, images, np.arange(8), 4, False, "fit")
    assert first.shape == (5, 6, 6, 8) and len(list(cache.dir.glob("fit-*.npy"))) == 3
    (sorted(cache.dir.glob("fit-*.npy"))[-1]).unlink()  # the chunk being written when the fit was killed

    calls = []
    real = graph.extract_features
    monkeypatch.setattr(graph, "extract_features", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    again = fit_module._FeatureCache(tmp_path, {"images": ["a", "b"]}).extract(lite0_features, images, np.arange(8), 4,
                                                                              False, "fit")  # fmt: skip
    assert calls == [1]  # only the missing last chunk (one image) was extracted again
    np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-5)
