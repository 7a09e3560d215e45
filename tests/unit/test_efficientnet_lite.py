"""The Keras EfficientNet-Lite0/1/2 port: ImageNet predictions on photos, exact stem, blocks, save/load."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgetl.backbones import backbone_blocks, load_backbone
from edgetl.weights import WeightsFileError
from edgetl.weights.efficientnet_lite import NUM_BLOCKS, VARIANTS, block_configs, packaged_weights_path
from edgetl.weights.torch_pickle import load_state_dict

CATS = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat
COFFEE = {967, 968, 504, 505, 966}  # espresso, cup, coffee mug, coffeepot, red wine (in a cup)


def _pixels(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), dtype="float32")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_imagenet_top5_recognizes_cat_and_coffee(name):
    from skimage import data as skdata  # a dev dependency: the test must run, never skip

    classifier = load_backbone(name, weights="imagenet", include_top=True)  # at its native resolution
    size = VARIANTS[name][2]
    assert classifier.input_shape == (None, size, size, 3)
    batch = np.stack([_pixels(skdata.chelsea(), size), _pixels(skdata.coffee(), size)])
    probs = classifier.predict(batch, verbose=0)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)  # softmax output, not logits
    cat_top5, coffee_top5 = (set(np.argsort(p)[::-1][:5].tolist()) for p in probs)
    assert cat_top5 & CATS, f"no cat class in top-5 {cat_top5}"
    assert coffee_top5 & COFFEE, f"no coffee class in top-5 {coffee_top5}"
    assert int(np.argmax(probs[0])) in CATS and probs[0].max() > 0.5


def test_stem_matches_a_numpy_reference_of_the_pytorch_conv():
    """First conv + nothing else, against numpy with TF-SAME padding (bottom/right) and torch layout."""
    keras = __import__("edgetl._tf", fromlist=["keras"]).keras()
    model = load_backbone("efficientnet_lite0", weights="imagenet", input_size=32)
    stem = keras.Model(model.input, model.get_layer("stem_conv").output)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    got = stem.predict(x, verbose=0)[0]

    w = load_state_dict(packaged_weights_path())["_conv_stem.weight"]  # (out, in, kh, kw)
    norm = (x[0] - 127.0) / 128.0
    padded = np.pad(norm, ((0, 1), (0, 1), (0, 0)))  # SAME, stride 2, k 3, even input: 0 before, 1 after
    want = np.zeros((16, 16, 32), dtype="float64")
    for i in range(16):
        for j in range(16):
            patch = padded[2 * i : 2 * i + 3, 2 * j : 2 * j + 3, :]  # (kh, kw, in)
            want[i, j] = np.einsum("hwc,ochw->o", patch, w)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_feature_map_shape_blocks_and_flatness():
    keras = __import__("edgetl._tf", fromlist=["keras"]).keras()
    model = load_backbone("efficientnet_lite0", weights=None, input_size=(64, 96))
    assert model.output_shape == (None, 2, 3, 1280)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    blocks = backbone_blocks(model, "efficientnet_lite0")
    assert len(blocks) == NUM_BLOCKS + 2 == 18
    assert [layer.name for layer in blocks[0]][:3] == ["image", "stem_normalize", "stem_conv"]
    assert [layer.name for layer in blocks[-1]] == ["head_conv", "head_bn", "head_relu"]
    assert sorted(id(layer) for group in blocks for layer in group) == sorted(id(layer) for layer in model.layers)


def test_saved_keras_file_and_weights_files_reload(tmp_path):
    keras = __import__("edgetl._tf", fromlist=["keras"]).keras()
    model = load_backbone("efficientnet_lite0", weights="imagenet", input_size=64)
    x = np.random.default_rng(1).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    want = model.predict(x, verbose=0)

    model.save(tmp_path / "lite0.keras")
    reloaded = keras.models.load_model(tmp_path / "lite0.keras")  # standard layers only: no custom_objects
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), want, atol=1e-5)

    model.save_weights(tmp_path / "lite0.weights.h5")
    from_h5 = load_backbone("efficientnet_lite0", weights=tmp_path / "lite0.weights.h5", input_size=64)
    np.testing.assert_allclose(from_h5.predict(x, verbose=0), want, atol=1e-5)

    from_pth = load_backbone("efficientnet_lite0", weights=str(packaged_weights_path()), input_size=64)
    np.testing.assert_allclose(from_pth.predict(x, verbose=0), want, atol=1e-5)

    random = load_backbone("efficientnet_lite0", weights=None, input_size=64)
    assert not np.allclose(random.predict(x, verbose=0), want, atol=1e-3)


def test_alpha_is_rejected_for_efficientnet_lite0():
    with pytest.raises(ValueError, match="alpha"):
        load_backbone("efficientnet_lite0", weights=None, alpha=0.5)


@pytest.mark.parametrize("name, blocks, head_in", [("efficientnet_lite1", 21, 320), ("efficientnet_lite2", 21, 352)])
def test_lite1_and_lite2_have_the_published_shape_and_any_input_size(name, blocks, head_in):
    assert len(block_configs(name)) == blocks and block_configs(name)[-1]["out"] == head_in
    model = load_backbone(name, weights="imagenet", input_size=(300, 300))  # ELPV's native size
    assert model.output_shape == (None, 10, 10, 1280)
    assert len(backbone_blocks(model, name)) == blocks + 2


def test_a_state_dict_of_another_variant_is_refused_by_name(tmp_path):
    with pytest.raises(WeightsFileError, match="21 blocks, but efficientnet_lite0 has 16"):
        load_backbone("efficientnet_lite0", weights=str(packaged_weights_path("efficientnet_lite2")), input_size=64)
