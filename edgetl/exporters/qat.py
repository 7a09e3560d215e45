"""Quantization-aware training: a short int8-aware fine-tune of a flat Keras model before conversion.

Annotation strategy. tensorflow-model-optimization's default 8-bit scheme knows Conv2D, Dense,
DepthwiseConv2D, ReLU, Add, pooling... (its registry), and folds BatchNormalization into the conv
before it. Layers outside that registry (Rescaling/Normalization at the input, MobileNetV3's
hard-swish built from ``TFOpLambda``/``Multiply``, custom layers) are left unannotated: they train in
float, and the TFLite converter calibrates their int8 ranges from the representative data set, as in
post-training quantization. Their names are returned in :attr:`QatResult.float_layers`, so the user
sees which parts of the model were not trained quantization-aware. A layer tfmot fails on while
applying the scheme raises :class:`QatError` naming it.

Range initialisation. tfmot's activation ranges are moving averages (decay 0.999) that start at
±6: after a short fine-tune (tens of steps) they are still about ±6, so small activations get a
coarse grid and large ones are clipped, and the converted model lost 1-4 points of accuracy and
most of its defect recall on ELPV. :func:`calibrate_ranges` first sets every moving-average range
to the min/max the activations take on the calibration images, as post-training calibration
does; the fine-tune then only adapts the weights to int8 rounding.

>>> QatError("conv1: unsupported").args[0]
'conv1: unsupported'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ExportError


class QatError(ExportError):
    """Quantization-aware training could not be applied to the model (names the layer when known)."""


@dataclass(frozen=True)
class QatResult:
    """The quantization-aware model, the layers that stayed float, and the fine-tune's last loss."""

    model: Any
    float_layers: tuple[str, ...]
    loss: float | None


def _bn_follows_conv(layer: Any, keras: Any) -> bool:
    """True when a BatchNormalization layer's input comes from a conv (tfmot folds the pair)."""
    conv = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    for node in getattr(layer, "_inbound_nodes", []):
        parents = node.inbound_layers
        parents = parents if isinstance(parents, (list, tuple)) else [parents]
        if any(isinstance(parent, conv) for parent in parents):
            return True
    return False


def annotate(model: Any) -> tuple[Any, tuple[str, ...]]:
    """Return ``(annotated copy of model, names of layers left float)`` for ``quantize_apply``."""
    from edgetl._tf import keras as get_keras

    keras = get_keras()
    import tensorflow_model_optimization as tfmot
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry as registry_mod,
    )

    registry = registry_mod.Default8BitQuantizeRegistry()
    left_float: list[str] = []

    def annotate_layer(layer: Any) -> Any:
        if isinstance(layer, keras.layers.BatchNormalization):
            if _bn_follows_conv(layer, keras):
                return tfmot.quantization.keras.quantize_annotate_layer(layer)
        elif registry.supports(layer):
            return tfmot.quantization.keras.quantize_annotate_layer(layer)
        left_float.append(layer.name)
        return layer

    if not isinstance(model, keras.Model) or model.__class__.__name__ not in ("Functional", "Model", "Sequential"):
        raise QatError(
            f"QAT needs a flat functional Keras model, got {model.__class__.__name__}; export the run's "
            "model.keras (edgetl train writes flat models) or use --quant int8"
        )
    nested = [layer.name for layer in model.layers if isinstance(layer, keras.Model)]
    if nested:
        raise QatError(
            f"layer {nested[0]!r} is a nested model; tfmot quantizes flat models only. Rebuild the "
            "classifier flat (backbone built with input_tensor=...) or use --quant int8"
        )
    copy = keras.models.clone_model(model, clone_function=annotate_layer)
    copy.set_weights(model.get_weights())
    return copy, tuple(left_float)


def quantized(annotated: Any) -> Any:
    """Return tfmot's quantization-aware model of ``annotated``, its BatchNorm in inference mode."""
    from edgetl._tf import keras as get_keras

    keras = get_keras()
    import tensorflow_model_optimization as tfmot

    try:
        with tfmot.quantization.keras.quantize_scope():
            qmodel = tfmot.quantization.keras.quantize_apply(annotated)
    except Exception as exc:
        raise QatError(
            f"tensorflow-model-optimization could not apply int8 QAT: {exc}. Export with --quant int8 "
            "(post-training calibration) instead."
        ) from exc
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", layer)  # QuantizeWrapper holds the real layer
        if isinstance(inner, keras.layers.BatchNormalization):
            # Inference-mode BatchNorm, as in training: the batch statistics of a few calibration
            # images must not overwrite the moving averages learned on the whole training set.
            inner.trainable = False
    return qmodel


EMA_DECAY = 0.999  # tfmot's MovingAverageQuantizer (quantizers.py passes ema_decay=0.999)


def _moving_average_ranges(qmodel: Any) -> list[dict[str, Any]]:
    """Return the ``{'min_var', 'max_var'}`` of every moving-average activation range in ``qmodel``."""
    from tensorflow_model_optimization.python.core.quantization.keras import quantizers

    found: list[dict[str, Any]] = []
    for layer in qmodel.layers:
        candidates = []
        if hasattr(layer, "quantizer") and hasattr(layer, "quantizer_vars"):  # QuantizeLayer (model input)
            candidates.append((layer.quantizer, layer.quantizer_vars))
        for activation in getattr(layer, "_quantize_activations", None) or []:
            for attr in ("_pre_activation_vars", "_post_activation_vars"):
                if hasattr(activation, attr):
                    candidates.append((activation.quantizer, getattr(activation, attr)))
        if getattr(layer, "_output_quantizers", None) and hasattr(layer, "_output_quantizer_vars"):
            candidates.append((layer._output_quantizers[0], layer._output_quantizer_vars))
        found += [v for q, v in candidates if isinstance(q, quantizers.MovingAverageQuantizer)]
    return found


def calibrate_ranges(qmodel: Any, pixels: np.ndarray, batch_size: int = 16, passes: int = 2) -> int:
    """Set each moving-average activation range of ``qmodel`` to its min/max on ``pixels``; return how many.

    One training-mode forward pass moves a range by ``(1 - decay) * (batch range - range)``, so the
    batch's own range is read back from the change. Every batch of a pass sees the same ranges (they
    are put back after each batch). The second pass measures each layer again with the ranges of
    the layers before it already calibrated, since its input is quantized by them.
    """
    from edgetl._tf import tensorflow

    tf = tensorflow()
    ranges = _moving_average_ranges(qmodel)
    if not ranges or not len(pixels):
        return len(ranges)
    forward = tf.function(lambda x: qmodel(x, training=True))
    for _ in range(passes):
        low: list[Any] = [None] * len(ranges)
        high: list[Any] = [None] * len(ranges)
        before = [(r["min_var"].numpy(), r["max_var"].numpy()) for r in ranges]
        for start in range(0, len(pixels), batch_size):
            forward(tf.constant(pixels[start : start + batch_size], tf.float32))
            for i, (r, (lo0, hi0)) in enumerate(zip(ranges, before)):
                lo = (r["min_var"].numpy() - EMA_DECAY * lo0) / (1 - EMA_DECAY)
                hi = (r["max_var"].numpy() - EMA_DECAY * hi0) / (1 - EMA_DECAY)
                low[i] = lo if low[i] is None else np.minimum(low[i], lo)
                high[i] = hi if high[i] is None else np.maximum(high[i], hi)
                r["min_var"].assign(lo0)
                r["max_var"].assign(hi0)
        for r, lo, hi in zip(ranges, low, high):
            # TFLite needs 0 inside every range; a constant activation still needs a non-empty range.
            lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
            r["min_var"].assign(lo.astype(np.float32))
            r["max_var"].assign(np.maximum(hi, lo + 1e-6).astype(np.float32))
    return len(ranges)


def quantize_aware(
    model: Any,
    pixels: np.ndarray,
    labels: np.ndarray,
    epochs: int = 2,
    learning_rate: float = 1e-5,
    batch_size: int = 16,
) -> QatResult:
    """Return ``model`` made quantization-aware and fine-tuned for ``epochs`` on uint8 ``pixels``.

    ``labels``: each image's class index into the model's labels, -1 where unknown (skipped).

    ``model`` is not changed (a copy is trained). ``learning_rate`` is small on purpose: QAT only adapts
    the weights to int8 rounding, it does not re-learn the task.
    """
    from edgetl._tf import keras as get_keras

    keras = get_keras()
    labelled = np.flatnonzero(np.asarray(labels) >= 0)
    if not labelled.size:
        raise QatError(
            "QAT needs labelled training images (the run's train split, or a --calib folder with "
            "<label>/ subfolders named like the model's labels); none of the images has a known label"
        )
    annotated, left_float = annotate(model)
    qmodel = quantized(annotated)
    calibrate_ranges(qmodel, pixels.astype(np.float32), batch_size)  # every image, labelled or not
    x = pixels[labelled].astype(np.float32)
    y = np.asarray(labels, np.int64)[labelled]
    qmodel.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
    )
    history = qmodel.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    losses = history.history.get("loss") or [None]
    return QatResult(model=qmodel, float_layers=left_float, loss=None if losses[-1] is None else float(losses[-1]))
