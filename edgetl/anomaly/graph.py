"""The anomaly detector as a Keras graph: frozen backbone taps -> aligned features -> Mahalanobis map.

The same graph extracts the features the statistics are fitted on and scores images, so fitting,
validation and export cannot disagree about the features. Everything after the backbone is
ordinary ops (pooling, resize, concat, gather, a batched matrix product, min, sqrt), which TFLite
and ONNX both convert.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._tf import keras, tensorflow
from .padim import PadimStats

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


def mahalanobis_layer(stats: PadimStats, name: str = "anomaly_map"):
    """Return a Keras layer: features (N, G, G, C) -> anomaly map (N, G, G), the distance to the nearest kind."""
    k, tf = keras(), tensorflow()

    class MahalanobisMap(k.layers.Layer):
        def __init__(self, channels, mean, cholesky, **kwargs):
            super().__init__(**kwargs)
            self.channels = np.asarray(channels, np.int32)
            self.mean_value = np.asarray(mean, np.float32)
            self.cholesky_value = np.asarray(cholesky, np.float32)

        def call(self, features):
            x = tf.gather(features, tf.constant(self.channels), axis=-1)
            d2 = []
            for mu, factor in zip(self.mean_value, self.cholesky_value):
                z = tf.einsum("bhwc,hwcd->bhwd", x - tf.constant(mu), tf.constant(factor))
                d2.append(tf.reduce_sum(tf.square(z), axis=-1))
            nearest = d2[0] if len(d2) == 1 else tf.reduce_min(tf.stack(d2, axis=0), axis=0)
            return tf.sqrt(tf.maximum(nearest, 0.0))

    return MahalanobisMap(stats.channels, stats.mean, stats.cholesky, name=name)


def anomaly_model(extractor: Any, stats: PadimStats) -> Any:
    """Return the detector: images -> ``[score (N, 1), anomaly map (N, G, G)]``; score = the map's maximum."""
    k = keras()
    grid = tuple(int(d) for d in extractor.output.shape[1:3])
    if grid != stats.grid:
        raise ValueError(f"the statistics are for a {stats.grid} grid, the features are {grid}")
    amap = mahalanobis_layer(stats)(extractor.output)
    score = k.layers.GlobalMaxPooling1D(name="anomaly_score")(k.layers.Reshape((-1, 1), name="flat_map")(amap))
    return k.Model(extractor.input, [score, amap], name="edgetl_anomaly")


def extract_features(extractor: Any, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Return ``extractor``'s features for uint8/float images (N, H, W, 3), in batches."""
    out = []
    for i in range(0, len(images), batch_size):
        out.append(np.asarray(extractor.predict_on_batch(images[i : i + batch_size].astype(np.float32))))
    if not out:
        return np.zeros((0, *extractor.output.shape[1:]), np.float32)
    return np.concatenate(out)
