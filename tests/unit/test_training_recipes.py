"""Fine-tuning recipe parts on numbers: layer-wise learning rates, weight averaging, the AUC metric,
rotation and gamma augmentation."""

from __future__ import annotations

import numpy as np
import pytest
from edgetl_runtime.decision import roc_auc

from edgetl._tf import keras, tensorflow
from edgetl.training.augment import Augmentation, _rotate, augment_image
from edgetl.training.objective import make_auc, pack_targets
from edgetl.training.optim import block_multipliers, make_optimizer, swap_in_average
from edgetl.training.options import TrainOptions


def _steps(optimizer, variables, gradients, n: int) -> None:
    for _ in range(n):
        optimizer.apply_gradients(zip(gradients, variables))


def test_a_blocks_step_is_scaled_by_its_factor_and_the_rest_take_the_full_rate():
    tf = tensorflow()
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(3,)).astype(np.float32)]
    grads = [tf.constant(rng.normal(size=s.shape).astype(np.float32)) for s in start]

    plain = [tf.Variable(s) for s in start]
    _steps(make_optimizer(1e-2), plain, grads, 5)
    scaled = [tf.Variable(s) for s in start]
    _steps(make_optimizer(1e-2, [(scaled[0], 0.25)]), scaled, grads, 5)

    plain_step = plain[0].numpy() - start[0]
    np.testing.assert_allclose(scaled[0].numpy() - start[0], 0.25 * plain_step, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scaled[1].numpy(), plain[1].numpy(), rtol=1e-6)  # not listed: full rate
    assert np.abs(plain_step).min() > 1e-3  # the steps compared are real steps


def test_block_factors_decay_from_the_top_block_down():
    assert block_multipliers(4, 0.8) == pytest.approx([0.512, 0.64, 0.8, 1.0])
    assert block_multipliers(3, 1.0) == [1.0, 1.0, 1.0]


def test_validation_sees_the_averaged_weights_and_training_goes_on_from_the_raw_ones():
    k = keras()
    model = k.Sequential([k.Input((2,)), k.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=make_optimizer(0.1, ema=0.5), loss="mse")
    # Steps by hand: Model.fit ends by overwriting the weights with the average (Keras' finalize).
    gradient = [tensorflow().ones_like(model.trainable_variables[0])]
    _steps(model.optimizer, model.trainable_variables, gradient, 4)
    raw = model.get_weights()[0].copy()
    average = model.optimizer._model_variables_moving_average[0].numpy()
    assert not np.allclose(raw, average)  # four steps one way: the average lags the weights
    with swap_in_average(model):
        np.testing.assert_allclose(model.get_weights()[0], average)
    np.testing.assert_allclose(model.get_weights()[0], raw)


def test_without_averaging_the_swap_changes_nothing():
    k = keras()
    model = k.Sequential([k.Input((2,)), k.layers.Dense(1)])
    model.compile(optimizer=make_optimizer(0.1), loss="mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    before = [w.copy() for w in model.get_weights()]
    with swap_in_average(model):
        for a, b in zip(model.get_weights(), before):
            np.testing.assert_array_equal(a, b)


def test_the_auc_metric_is_the_roc_auc_of_the_defect_score():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=200)  # classes 0 "good", 1 and 2 defects
    probs = rng.dirichlet([1, 1, 1], size=200).astype(np.float32)
    probs[labels > 0, 0] *= 0.5  # informative but imperfect
    probs /= probs.sum(1, keepdims=True)
    metric = make_auc(3, [1, 2])
    metric.update_state(pack_targets(labels, 3, train=False), probs)
    expected = roc_auc(labels > 0, probs[:, 1] + probs[:, 2])
    assert 0.6 < expected < 0.95
    assert float(metric.result()) == pytest.approx(expected, abs=2e-3)


def test_rotating_a_square_image_a_quarter_turn_matches_rot90():
    tf = tensorflow()
    image = np.random.default_rng(2).uniform(0, 255, size=(17, 17, 3)).astype(np.float32)
    turned = _rotate(tf.constant(image), tf.constant(90.0)).numpy()
    quarter = [np.rot90(image, k) for k in (1, 3)]  # whichever way round the angle's sign goes
    assert min(np.abs(turned - q).max() for q in quarter) < 1e-2


def test_small_rotations_and_gamma_keep_shape_and_range_and_change_the_image():
    tf = tensorflow()
    image = np.tile(np.linspace(0, 255, 40, dtype=np.float32), (40, 1))[..., None].repeat(3, -1)
    only = Augmentation.off()
    for aug in (Augmentation(**{**only.to_dict(), "rotate": 15.0}), Augmentation(**{**only.to_dict(), "gamma": 0.5})):
        out = augment_image(tf.constant(image), tf.constant([3, 4]), aug).numpy()
        assert out.shape == image.shape and out.min() >= 0.0 and out.max() <= 255.0
        assert np.abs(out - image).mean() > 0.5
    same = augment_image(tf.constant(image), tf.constant([3, 4]), only).numpy()
    np.testing.assert_array_equal(same, image)


@pytest.mark.parametrize("bad", [dict(rotate=-1.0), dict(rotate=200.0), dict(gamma=-0.1), dict(shift=0.7)])
def test_impossible_augmentations_are_refused(bad):
    with pytest.raises(ValueError, match="invalid augmentation"):
        Augmentation(**bad)


@pytest.mark.parametrize("bad", [dict(layer_decay=0.0), dict(layer_decay=1.5), dict(ema=1.0),
                                 dict(select="accuracy"), dict(warmup_epochs=20.0)])
def test_impossible_recipe_options_are_refused(bad):
    with pytest.raises(ValueError, match="invalid training options"):
        TrainOptions(**bad)


def test_module_doctest() -> None:
    import doctest

    from edgetl.training import optim

    assert doctest.testmod(optim).failed == 0
