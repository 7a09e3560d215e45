"""The anomaly detector as a Keras graph: frozen backbone taps -> aligned features -> Mahalanobis map.

The same graph extracts the features the statistics are fitted on and scores images, so fitting,
validation and export cannot disagree about the features. Everything after the backbone is
ordinary ops (pooling, resize, concat, gather, a batched matrix product, min, sqrt), which TFLite
and ONNX both convert.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from .._tf import keras, tensorflow
from .padim import PadimStats

MAX_STATISTICS = 2**28  # float32 values of the Cholesky factors a detector may hold (1 GiB)
TAP_STRIDES = (8, 16, 32)  # chosen on ELPV: stride 4 hurt, stride 32 helped (docs/BENCHMARKS.md)
GRID_STRIDE = 16  # the anomaly map has one cell per 16x16 input pixels


def tap_layers(backbone: Any, name: str, strides: tuple[int, ...] = TAP_STRIDES) -> list[str]:
    """Return the names of the last layers of ``backbone``'s blocks at each output stride in ``strides``."""
    from ..backbones import backbone_blocks

    height = int(backbone.input.shape[1])
    last_at: dict[int, str] = {}
    residual_at: dict[int, str] = {}
    add = keras().layers.Add
    for block in backbone_blocks(backbone, name)[:-1]:  # not the final 1x1 head conv: too ImageNet-specific
        h = block[-1].output.shape[1]
        if h:
            stride = int(round(height / int(h)))
            last_at[stride] = block[-1].name
            if isinstance(block[-1], add):
                residual_at[stride] = block[-1].name
    # A residual block's output (input + refinement) beat the plain 1x1 projection that ends a
    # stage on ELPV (ROC AUC 0.894 against 0.880 at stride 32): prefer it where the stage has one.
    last_at.update(residual_at)
    missing = [s for s in strides if s not in last_at]
    if missing:
        raise ValueError(f"{name} at {height} px has no block at stride {missing} (it has {sorted(last_at)})")
    return [last_at[s] for s in strides]


def feature_extractor(backbone: Any, name: str, strides: tuple[int, ...] = TAP_STRIDES) -> Any:
    """Return a Keras model: images (N, H, W, 3) pixels 0..255 -> features (N, H/16, W/16, C) at one grid.

    Finer taps are average-pooled to the grid, coarser ones resized bilinearly, then concatenated.
    """
    k = keras()
    height, width = int(backbone.input.shape[1]), int(backbone.input.shape[2])
    grid = (max(1, height // GRID_STRIDE), max(1, width // GRID_STRIDE))
    parts = []
    for layer_name in tap_layers(backbone, name, strides):
        x = backbone.get_layer(layer_name).output
        h, w = int(x.shape[1]), int(x.shape[2])
        if h > grid[0] and h % grid[0] == 0 and w % grid[1] == 0:
            x = k.layers.AveragePooling2D((h // grid[0], w // grid[1]), name=f"pool_{layer_name}")(x)
        elif (h, w) != grid:
            x = k.layers.Resizing(grid[0], grid[1], interpolation="bilinear", name=f"resize_{layer_name}")(x)
        parts.append(x)
    features = k.layers.Concatenate(name="anomaly_features")(parts)
    return k.Model(backbone.input, features, name=f"features_{name}")


@functools.cache
def layer_classes() -> dict[str, Any]:
    """Return the detector's two Keras layers by registered name (defined and registered on first use).

    Registered serializable classes, not ``Lambda`` layers: a run's ``model.keras`` loads in Keras'
    safe mode (:func:`edgetl.run.load_keras_model` passes these as custom objects), and the fitted
    statistics are the layer's (non-trainable) weights.
    """
    k, tf = keras(), tensorflow()
    register = k.utils.register_keras_serializable(package="edgetl")

    class MahalanobisMap(k.layers.Layer):
        """features (N, G, G, C) -> (N, G, G): the Mahalanobis distance to the nearest kind of good part."""

        def __init__(self, channels, clusters, grid, clip=0.0, **kwargs):
            super().__init__(**kwargs)
            self.channels = [int(c) for c in channels]
            self.clusters, self.grid, self.clip = int(clusters), tuple(int(g) for g in grid), float(clip)
            # A model.keras someone hands over sets these: bound the weights they would allocate.
            elements = self.clusters * int(np.prod(self.grid)) * len(self.channels) ** 2
            if not (0 < self.clusters <= 64 and len(self.grid) == 2 and min(self.grid) > 0 and self.channels
                    and elements <= MAX_STATISTICS):  # fmt: skip
                raise ValueError(f"anomaly statistics of {self.clusters} kinds, a {self.grid} grid and "
                                 f"{len(self.channels)} channels are not what edgetl fits (at most "
                                 f"{MAX_STATISTICS:,} values); the model file was edited")  # fmt: skip

        def build(self, input_shape):
            d = len(self.channels)
            shape = (self.clusters, *self.grid, d)
            self.mean = self.add_weight(name="mean", shape=shape, initializer="zeros", trainable=False)
            self.cholesky = self.add_weight(name="cholesky", shape=(*shape, d), initializer="zeros", trainable=False)
            super().build(input_shape)

        def call(self, features):
            x = tf.gather(features, tf.constant(self.channels, tf.int32), axis=-1)
            d2 = []
            for j in range(self.clusters):
                z = tf.einsum("bhwc,hwcd->bhwd", x - self.mean[j], self.cholesky[j])
                if self.clip:
                    z = tf.clip_by_value(z, -self.clip, self.clip)
                d2.append(tf.reduce_sum(tf.square(z), axis=-1))
            nearest = d2[0] if len(d2) == 1 else tf.reduce_min(tf.stack(d2, axis=0), axis=0)
            return tf.sqrt(tf.maximum(nearest, 0.0))

        def get_config(self):
            return {**super().get_config(), "channels": self.channels, "clusters": self.clusters,
                    "grid": list(self.grid), "clip": self.clip}

    class AnomalyDecision(k.layers.Layer):
        """distances (N, G, G) -> [scores (N, 2) as (good, anomaly), heatmap (N, G, G)], all in [0, 1].

        ``heat = sigmoid((distance - threshold) / width)`` per cell; the image's distance is the
        mean of its ``top_k`` most distant cells (1: the farthest), its anomaly score the same
        sigmoid of it, and 1 - score is "good": a bounded score with 0.5 at the calibrated
        threshold, on the classifier's scale, which an int8 output represents well.
        """

        def __init__(self, threshold, width, top_k=1, **kwargs):
            super().__init__(**kwargs)
            self.threshold, self.width, self.top_k = float(threshold), float(width), int(top_k)

        def call(self, distances):
            heat = tf.sigmoid((distances - self.threshold) / self.width)
            if self.top_k <= 1:
                image = tf.reduce_max(distances, axis=[1, 2])
            else:
                flat = tf.reshape(distances, (-1, int(distances.shape[1]) * int(distances.shape[2])))
                image = tf.reduce_mean(tf.math.top_k(flat, k=self.top_k, sorted=False).values, axis=1)
            score = tf.expand_dims(tf.sigmoid((image - self.threshold) / self.width), -1)
            return [tf.concat([1.0 - score, score], axis=1), heat]

        def get_config(self):
            return {**super().get_config(), "threshold": self.threshold, "width": self.width, "top_k": self.top_k}

    return {f"edgetl>{cls.__name__}": register(cls) for cls in (MahalanobisMap, AnomalyDecision)}


def anomaly_model(extractor: Any, stats: PadimStats, threshold: float, width: float, top_k: int = 1) -> Any:
    """Return the detector: images -> ``[scores (N, 2) good/anomaly, heatmap (N, G, G)]``.

    ``threshold`` is the image distance that scores 0.5; ``width`` how fast the score rises around
    it (distance units); ``top_k`` the cells averaged into the image's distance; see
    ``AnomalyDecision`` in :func:`layer_classes`.
    """
    k = keras()
    grid = tuple(int(d) for d in extractor.output.shape[1:3])
    if grid != stats.grid:
        raise ValueError(f"the statistics are for a {stats.grid} grid, the features are {grid}")
    if not (np.isfinite(threshold) and np.isfinite(width) and width > 0):
        raise ValueError(f"need a finite threshold and a positive width, got {threshold}, {width}")
    layers = layer_classes()
    distance = layers["edgetl>MahalanobisMap"](stats.channels, stats.clusters, stats.grid, stats.clip,
                                               name="anomaly_distance")
    amap = distance(extractor.output)
    distance.set_weights([stats.mean, stats.cholesky])
    scores, heatmap = layers["edgetl>AnomalyDecision"](threshold, width, top_k, name="anomaly_decision")(amap)
    return k.Model(extractor.input, [scores, heatmap], name="edgetl_anomaly")


def distance_model(detector: Any) -> Any:
    """Return ``detector`` cut before its decision: images -> the distance map (N, G, G), for calibration."""
    k = keras()
    return k.Model(detector.input, detector.get_layer("anomaly_distance").output, name="anomaly_distances")


def extract_features(extractor: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Return ``extractor``'s features for uint8/float images (N, H, W, 3), in batches."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(np.asarray(extractor.predict_on_batch(images[i : i + batch_size].astype(np.float32))))
    if not out:
        return np.zeros((0, *extractor.output.shape[1:]), np.float32)
    return np.concatenate(out)
