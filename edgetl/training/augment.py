"""Augmentation for inspection images and the seeded input pipelines used by the trainer.

Inspection images have no canonical orientation (a crack is a crack at any angle) and vary in
exposure, so the defaults are flips, 90-degree rotations, small shifts, brightness and contrast;
small free rotations and gamma are available, off by default (docs/BENCHMARKS.md shows what they
did on ELPV).
Every random draw is a *stateless* op seeded from (seed, epoch, sample index): the same seed gives
the same batches, and a resumed run sees exactly the batches an uninterrupted run would have.

>>> Augmentation().enabled
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .._tf import tensorflow


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations to apply; magnitudes are fractions (of size or of the pixel range)."""

    flip: bool = True
    rotate90: bool = True
    shift: float = 0.05  # max translation as a fraction of height/width
    brightness: float = 0.1  # max brightness change as a fraction of 255
    contrast: float = 0.1  # contrast factor drawn from [1 - c, 1 + c]
    rotate: float = 0.0  # max rotation in degrees (any angle; edges filled by reflection)
    gamma: float = 0.0  # gamma drawn log-uniformly from [1 / (1 + g), 1 + g]

    def __post_init__(self) -> None:
        if not (0.0 <= self.shift < 0.5 and self.brightness >= 0 and 0.0 <= self.contrast < 1.0
                and 0.0 <= self.rotate <= 180.0 and self.gamma >= 0):
            raise ValueError(f"invalid augmentation {self.to_dict()}: 0 <= shift < 0.5, brightness >= 0, "
                             "0 <= contrast < 1, 0 <= rotate <= 180 degrees, gamma >= 0")

    @property
    def enabled(self) -> bool:
        return (self.flip or self.rotate90 or self.shift > 0 or self.brightness > 0 or self.contrast > 0
                or self.rotate > 0 or self.gamma > 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def off(cls) -> Augmentation:
        return cls(flip=False, rotate90=False, shift=0.0, brightness=0.0, contrast=0.0, rotate=0.0, gamma=0.0)


def _rotate(image, degrees):
    """Rotate one HxWxC image by ``degrees`` about its centre (bilinear; reflected edges, no black corners)."""
    tf = tensorflow()
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    angle = degrees * (np.pi / 180.0)
    cos, sin = tf.cos(angle), tf.sin(angle)
    # Output pixel (x, y) samples the input at the inverse rotation about the centre.
    dx = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    dy = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, dx, sin, cos, dy, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=shape[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.reshape(out[0], shape)


def augment_image(image, seed, aug: Augmentation):
    """Return one float32 HxWxC image (pixels 0..255) augmented with stateless ops from ``seed``."""
    tf = tensorflow()
    seeds = tf.random.experimental.stateless_split(seed, num=6)
    if aug.flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[0])
        image = tf.image.stateless_random_flip_up_down(image, seeds[1])
    if aug.rotate90:
        height, width = image.shape[0], image.shape[1]
        # Square images take any quarter turn; others only 0 or 180 degrees (shape must not change).
        k = tf.random.stateless_uniform([], seeds[2], 0, 4 if height == width else 2, dtype=tf.int32)
        image = tf.image.rot90(image, k * 2 if height != width else k)
    if aug.shift > 0:
        shape = tf.shape(image)
        max_dy = tf.cast(tf.cast(shape[0], tf.float32) * aug.shift, tf.int32)
        max_dx = tf.cast(tf.cast(shape[1], tf.float32) * aug.shift, tf.int32)
        padded = tf.pad(image, [[max_dy, max_dy], [max_dx, max_dx], [0, 0]], mode="REFLECT")
        offset = tf.random.stateless_uniform([2], seeds[3], 0, 10**6, dtype=tf.int32)
        image = tf.slice(
            padded,
            [offset[0] % (2 * max_dy + 1), offset[1] % (2 * max_dx + 1), 0],
            shape,
        )
    if aug.brightness > 0:
        image = tf.image.stateless_random_brightness(image, aug.brightness * 255.0, seeds[4])
    if aug.contrast > 0:
        image = tf.image.stateless_random_contrast(image, 1 - aug.contrast, 1 + aug.contrast, seeds[5])
    # Later additions draw from seeds folded in from the same seed: the draws above stay as they were.
    if aug.rotate > 0:
        degrees = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 6),
                                              -aug.rotate, aug.rotate)
        image = _rotate(image, degrees)
    if aug.gamma > 0:
        log_g = float(np.log1p(aug.gamma))
        gamma = tf.exp(tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(seed, 7),
                                                   -log_g, log_g))
        image = 255.0 * tf.pow(tf.clip_by_value(image, 0.0, 255.0) / 255.0, gamma)
    return tf.clip_by_value(image, 0.0, 255.0)


def epoch_dataset(
    x: np.ndarray,
    y: np.ndarray,
    sample_weight: np.ndarray | None,
    batch_size: int,
    seed: int,
    first_epoch: int,
    epochs: int,
    aug: Augmentation | None,
):
    """Return a tf.data pipeline of shuffled (augmented) batches for epochs ``first_epoch..epochs-1``.

    Each epoch's order and augmentation depend only on (seed, epoch), so ``fit(initial_epoch=k)``
    on this dataset continues an interrupted run exactly.
    """
    tf = tensorflow()
    n = len(x)
    weights = np.ones(n, np.float32) if sample_weight is None else sample_weight.astype(np.float32)
    images, labels, weights = tf.constant(x), tf.constant(y), tf.constant(weights)

    def one_epoch(epoch):
        order = tf.random.experimental.stateless_shuffle(tf.range(n), seed=tf.stack([seed, epoch]))
        ds = tf.data.Dataset.from_tensor_slices(order)

        def load(i):
            image = tf.cast(tf.gather(images, i), tf.float32)
            if aug is not None and aug.enabled:
                image = augment_image(image, tf.stack([seed * 7919 + epoch, i]), aug)
            return image, tf.gather(labels, i), tf.gather(weights, i)

        return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size)

    epochs_ds = tf.data.Dataset.range(first_epoch, epochs).map(lambda e: tf.cast(e, tf.int32))
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, y: np.ndarray, batch_size: int):
    """Return an unshuffled, unaugmented tf.data pipeline of float batches for validation."""
    tf = tensorflow()
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    return ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b)).prefetch(tf.data.AUTOTUNE)
