"""Backbones by name: specs, flat models with normalization inside, blocks, offline weights, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgetl.backbones import (
    BackboneSpec,
    UnknownBackbone,
    backbone_blocks,
    get_spec,
    list_backbones,
    load_backbone,
    weights_available_offline,
)
from edgetl.weights import WeightsFileError, WeightsUnavailable
from edgetl.weights.keras_cache import keras_weights_file

KERAS_BACKBONES = {  # name -> (feature channels, number of block groups incl. stem and head, final conv)
    "mobilenet_v2": (1280, 19, "Conv_1"),
    "mobilenet_v3_small": (576, 13, "Conv_1"),
    "mobilenet_v3_large": (960, 17, "Conv_1"),
}


def _keras():
    from edgetl._tf import keras

    return keras()


@pytest.fixture
def empty_offline_cache(tmp_path, monkeypatch):
    """No network, and a Keras cache folder with nothing in it."""
    monkeypatch.setenv("EDGETL_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home"


def test_names_and_specs():
    assert list_backbones() == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenet_v2",
                                "mobilenet_v3_large", "mobilenet_v3_small"]
    spec = get_spec("efficientnet_lite0")
    assert isinstance(spec, BackboneSpec) and spec.default_input_size == (224, 224)
    with pytest.raises(AttributeError):
        spec.name = "other"  # frozen
    with pytest.raises(UnknownBackbone) as info:
        get_spec("resnet50")
    assert "resnet50" in str(info.value) and "mobilenet_v3_small" in str(info.value)
    with pytest.raises(UnknownBackbone):
        load_backbone("mobilenetv2", weights=None)


@pytest.mark.parametrize("name", sorted(KERAS_BACKBONES))
def test_random_init_is_flat_normalizes_inside_and_has_blocks(name):
    keras = _keras()
    channels, n_groups, final_conv = KERAS_BACKBONES[name]
    model = load_backbone(name, weights=None, input_size=96)
    assert model.input_shape == (None, 96, 96, 3)
    assert model.output_shape == (None, 3, 3, channels)  # feature map, no pooling
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)

    rescale = model.layers[1]
    assert isinstance(rescale, keras.layers.Rescaling)
    pixels = np.array([[[[0.0, 127.5, 255.0]]]], dtype="float32")
    np.testing.assert_allclose(rescale(pixels).numpy(), [[[[-1.0, 0.0, 1.0]]]], atol=1e-6)

    blocks = backbone_blocks(model, name)
    assert len(blocks) == n_groups
    assert blocks[0][0] is model.layers[0] and rescale in blocks[0]
    assert final_conv in [layer.name for layer in blocks[-1]]
    assert model.layers[-1] in blocks[-1]
    covered = [id(layer) for group in blocks for layer in group]
    assert sorted(covered) == sorted(id(layer) for layer in model.layers)  # each layer exactly once

    # the trainer's construction stays flat
    head = keras.layers.Dense(2, name="scores")(keras.layers.GlobalAveragePooling2D(name="pool")(model.output))
    full = keras.Model(model.input, head)
    assert not any(isinstance(layer, keras.Model) for layer in full.layers)
    assert [layer.name for layer in backbone_blocks(full, name)[-1]][-2:] == ["pool", "scores"]


def test_include_top_gives_imagenet_softmax():
    model = load_backbone("mobilenet_v3_small", weights=None, include_top=True)
    assert model.output_shape == (None, 1000)
    probs = model.predict(np.full((1, 224, 224, 3), 100.0, dtype="float32"), verbose=0)
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-4)


def test_mobilenet_v2_alpha_changes_width():
    narrow = load_backbone("mobilenet_v2", weights=None, input_size=64, alpha=0.35)
    assert narrow.count_params() < load_backbone("mobilenet_v2", weights=None, input_size=64).count_params() / 2


def test_offline_with_empty_cache_fails_fast_and_says_what_to_do(empty_offline_cache, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("EDGETL_OFFLINE=1 must not attempt a download")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(WeightsUnavailable) as info:
        load_backbone("mobilenet_v2", weights="imagenet")
    message = str(info.value)
    expected = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    assert expected in message
    assert str(empty_offline_cache / "models") in message
    assert "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + expected in message
    assert "weights=" in message
    assert not weights_available_offline("mobilenet_v2")
    assert weights_available_offline("efficientnet_lite0")


def test_cached_keras_file_is_used_offline(empty_offline_cache):
    """A file in the cache under Keras' own name is found and loaded with no network."""
    source = load_backbone("mobilenet_v3_small", weights=None, input_size=96)
    spec = keras_weights_file("mobilenet_v3_small", include_top=False, alpha=1.0, rows=224)
    assert spec.file_name == "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    (empty_offline_cache / "models").mkdir(parents=True)
    source.save_weights(str(empty_offline_cache / "models" / spec.file_name))
    assert weights_available_offline("mobilenet_v3_small")

    loaded = load_backbone("mobilenet_v3_small", weights="imagenet", input_size=96)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_path_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsUnavailable, match="nowhere.h5"):
        load_backbone("mobilenet_v2", weights=tmp_path / "nowhere.h5", input_size=64)
    wrong = tmp_path / "lite.weights.h5"
    load_backbone("efficientnet_lite0", weights=None, input_size=64).save_weights(str(wrong))
    with pytest.raises(WeightsFileError, match="lite.weights.h5"):
        load_backbone("mobilenet_v2", weights=wrong, input_size=64)


def test_cli_lists_backbones(empty_offline_cache):
    from edgetl.cli import main

    runner = CliRunner()
    result = runner.invoke(main, ["backbones", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert sorted(rows) == list_backbones()
    assert rows["efficientnet_lite0"]["imagenet_offline"] is True
    assert rows["mobilenet_v2"]["imagenet_offline"] is False
    assert rows["mobilenet_v2"]["input_size"] == [224, 224]
    assert rows["efficientnet_lite0"]["params"] == load_backbone("efficientnet_lite0", weights=None).count_params()
    assert rows["mobilenet_v3_small"]["params"] < rows["mobilenet_v2"]["params"]

    table = runner.invoke(main, ["backbones", "list", "--no-params"])
    assert table.exit_code == 0, table.output
    for name in list_backbones():
        assert name in table.output
    assert "yes" in table.output and "no" in table.output

    assert "offline" in runner.invoke(main, ["backbones", "list", "--help"]).output
