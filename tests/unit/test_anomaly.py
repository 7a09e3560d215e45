"""Anomaly statistics from good images (issue 13): the numpy fit and scores, the Keras graph, int8 TFLite."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.anomaly import (anomaly_model, extract_features, feature_extractor, fit_padim, image_scores,
                            score_maps, tap_layers, with_synthetic_anomalies)
from edgetl.anomaly.graph import distance_model
from edgetl.backbones import load_backbone


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


def test_the_keras_graph_scores_as_the_numpy_reference(lite0_features, make_part):
    rng = np.random.default_rng(1)
    good = np.stack([make_part(rng, i % 2, False) for i in range(24)])
    test = np.stack([make_part(rng, i % 2, i % 3 == 0) for i in range(9)])
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


def test_the_detector_saves_and_loads_in_safe_mode_with_its_statistics(lite0_features, tmp_path, make_part):
    from edgetl.run import load_keras_model

    rng = np.random.default_rng(3)
    good = np.stack([make_part(rng, i % 2, False) for i in range(12)])
    stats = fit_padim(extract_features(lite0_features, good), dims=16, clusters=1)
    model = anomaly_model(lite0_features, stats, 5.0, 1.0)
    model.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")
    x = good[:3].astype(np.float32)
    for a, b in zip(model.predict_on_batch(x), loaded.predict_on_batch(x)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_synthetic_defects_paint_one_region_of_each_copy_and_leave_the_originals(make_part):
    # int8 calibration and validation of anomaly exports use them (the int8 path: tests/integration/test_anomaly_flow.py)
    rng = np.random.default_rng(6)
    good = np.stack([make_part(rng, i % 2, False) for i in range(8)])
    out = with_synthetic_anomalies(good, seed=0)
    assert out.shape == (16, *good.shape[1:]) and np.array_equal(out[:8], good)
    changed = (out[8:] != good).any(axis=-1).mean(axis=(1, 2))
    assert ((changed > 0.001) & (changed < 0.6)).all()  # one patch or stripe, not the whole image


def test_the_scoring_tail_with_top_k_converts_to_int8_and_keeps_the_order(tmp_path):
    """The tail alone (features in, no backbone) through the int8 converter and LiteRT: TOPK_V2 included."""
    from ai_edge_litert.interpreter import Interpreter

    from edgetl._tf import keras
    from edgetl.anomaly.graph import layer_classes
    from edgetl.exporters import ExportOptions
    from edgetl.exporters.tflite import convert
    from edgetl.exporters.validate import rank_agreement

    rng = np.random.default_rng(7)
    good = rng.normal(100, 20, (60, 4, 4, 3)).astype(np.float32)
    stats = fit_padim(good, dims=3, clusters=1)
    k = keras()
    features = k.Input((4, 4, 3))
    layers = layer_classes()
    distance = layers["edgetl>MahalanobisMap"](stats.channels, 1, (4, 4), stats.clip)
    amap = distance(features)
    distance.set_weights([stats.mean, stats.cholesky])
    scores, heat = layers["edgetl>AnomalyDecision"](3.0, 1.0, 3)(amap)
    model = k.Model(features, [scores, heat])
    test = good[:20].copy()
    test[10:, 1:3, 1:3] += rng.uniform(0, 120, (10, 1, 1, 1)).astype(np.float32)  # anomalies of growing strength
    calibration = np.concatenate([good[20:], test[10:]]).clip(0, 255).astype(np.uint8)
    # all-int8, as the pipeline converts an anomaly detector (its tail is not a classifier head)
    interpreter = Interpreter(model_content=convert(model, ExportOptions(quantization="int8", float_head=False),
                                                    calibration))
    interpreter.allocate_tensors()
    assert "TOPK_V2" in {op["op_name"] for op in interpreter._get_ops_details()}
    (inp,) = interpreter.get_input_details()
    out = min(interpreter.get_output_details(), key=lambda o: len(o["shape"]))
    (scale, zero), got = out["quantization"], []
    for x in test.clip(0, 255).astype(np.uint8):
        interpreter.set_tensor(inp["index"], x[None])
        interpreter.invoke()
        got.append((interpreter.get_tensor(out["index"])[0, 1].astype(np.float32) - zero) * scale)
    expected = model.predict_on_batch(test.clip(0, 255).astype(np.uint8).astype(np.float32))[0][:, 1]
    assert rank_agreement(np.array(got), expected) > 0.9


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


def test_an_interrupted_fit_reuses_the_feature_chunks_already_written(lite0_features, tmp_path, monkeypatch, make_part):
    from edgetl.anomaly import fit as fit_module
    from edgetl.anomaly import graph

    rng = np.random.default_rng(5)
    images = np.stack([make_part(rng, 0, False) for i in range(5)])
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


def test_a_tampered_detector_asking_for_huge_statistics_is_refused_before_allocating(lite0_features, tmp_path, make_part):
    import json
    import zipfile

    from edgetl.run import RunError, load_keras_model

    rng = np.random.default_rng(8)
    stats = fit_padim(extract_features(lite0_features, np.stack([make_part(rng, 0, False) for _ in range(4)])),
                      dims=4, clusters=1)
    anomaly_model(lite0_features, stats, 5.0, 1.0).save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as src, zipfile.ZipFile(tmp_path / "tampered.keras", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                layer = next(lay for lay in config["config"]["layers"] if lay["config"]["name"] == "anomaly_distance")
                layer["config"]["channels"] = list(range(100_000))  # 10^10 values per kind and cell
                data = json.dumps(config).encode()
            dst.writestr(item, data)
    with pytest.raises(RunError, match="the model file was edited") as info:
        load_keras_model(tmp_path / "tampered.keras")
    assert len(str(info.value)) < 800  # not the megabyte config Keras quotes
