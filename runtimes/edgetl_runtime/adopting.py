"""``adopt``: write an edgetl model contract into a third-party ``.tflite``/``.onnx`` classifier.

Most image models come out of PyTorch (timm, torchvision, Ultralytics) or Keras, with the input
scaling done outside the graph and, often, logits out. A bare file does not say any of that, so
the runtime could only guess. ``adopt`` writes what it needs, the same contract ``edgetl export``
embeds (:class:`~edgetl_runtime.contract.ModelSpec`): labels and good labels, the input's layout
(NCHW or NHWC), colour order, size, resize, mean/std, what the output holds (probabilities or
logits) and the threshold. Then ``predict``, ``bench``, ``eval``, ``serve`` read the file like an
edgetl export.

The graph is not touched: an ``.onnx`` keeps every byte but the appended ``metadata_props``; a
``.tflite`` is re-packed with one metadata entry more (the same serializer as ``edgetl export``),
and the result is checked to give bit-identical outputs to the original on a test input.

>>> from edgetl_runtime import adopt                                        # doctest: +SKIP
>>> adopt("resnet18.onnx", "resnet18-edgetl.onnx", preset="torchvision", labels="labels.txt")  # doctest: +SKIP

Presets state each source's own documented preprocessing (:data:`PRESETS`). Every source resizes
and then centre-crops; the runtime resizes the whole image (or the part's ``--roi``) to the model's
size, which is what an inspection station wants: give the part's box, not a crop fraction.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import metadata as md
from .contract import DecisionSpec, InputSpec, ModelSpec, OutputSpec, Provenance, default_good_labels
from .errors import MetadataError, ModelFormatError

_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # 123.675, 116.28, 103.53
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)  # 58.395, 57.12, 57.375


@dataclass(frozen=True)
class Preset:
    """How a source project prepares images for its models, and what they output (``mean``/``std`` in pixel units)."""

    name: str
    layout: str  # what its exports have; the model's input tensor decides when it can tell
    channel_order: str
    mean: tuple[float, ...]  # () with std (): the model takes pixels 0..255 and normalizes inside
    std: tuple[float, ...]
    resize: str
    output: str  # probabilities | logits
    source: str  # where the source documents it


PRESETS = {
    "timm": Preset(
        "timm", "nchw", "rgb", _IMAGENET_MEAN, _IMAGENET_STD, "bicubic", "logits",
        "timm.data.IMAGENET_DEFAULT_MEAN/STD, (0.485, 0.456, 0.406) and (0.229, 0.224, 0.225) on pixels/255; "
        "interpolation 'bicubic' in most models' pretrained_cfg (check model.pretrained_cfg: a few use "
        "other means, e.g. Inception's 0.5/0.5, or bilinear: then give --mean/--std/--resize); the "
        "classifier head outputs logits"),
    "torchvision": Preset(
        "torchvision", "nchw", "rgb", _IMAGENET_MEAN, _IMAGENET_STD, "bilinear", "logits",
        "torchvision's weights.transforms() = ImageClassification(mean=(0.485, 0.456, 0.406), "
        "std=(0.229, 0.224, 0.225), interpolation=BILINEAR) on pixels/255; the models output logits"),
    "ultralytics-cls": Preset(
        "ultralytics-cls", "nchw", "rgb", (0.0, 0.0, 0.0), (255.0, 255.0, 255.0), "bilinear", "probabilities",
        "ultralytics.data.augment.classify_transforms: DEFAULT_MEAN (0, 0, 0), DEFAULT_STD (1, 1, 1) on "
        "pixels/255 (pixels scaled to 0-1), bilinear; an exported YOLO -cls model ends in a softmax; labels "
        "and size from the file's own 'names' and 'imgsz' metadata"),
    "keras-applications": Preset(
        "keras-applications", "nhwc", "rgb", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5), "bilinear",
        "probabilities",
        "keras.applications preprocess_input, mode 'tf' (MobileNet, MobileNetV2, Xception, InceptionV3, "
        "InceptionResNetV2, NASNet): pixels/127.5 - 1; classifier_activation='softmax'. For ResNet50/VGG "
        "use keras-caffe, for DenseNet keras-torch, for EfficientNet/MobileNetV3/ConvNeXt keras-raw"),
    "keras-caffe": Preset(
        "keras-caffe", "nhwc", "bgr", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), "bilinear", "probabilities",
        "keras.applications preprocess_input, mode 'caffe' (ResNet50/101/152, VGG16/19): RGB to BGR, minus "
        "the ImageNet mean (103.939, 116.779, 123.68) in BGR order, no scaling"),
    "keras-torch": Preset(
        "keras-torch", "nhwc", "rgb", _IMAGENET_MEAN, _IMAGENET_STD, "bilinear", "probabilities",
        "keras.applications preprocess_input, mode 'torch' (DenseNet): pixels/255, then ImageNet mean/std"),
    "keras-raw": Preset(
        "keras-raw", "nhwc", "rgb", (), (), "bilinear", "probabilities",
        "keras.applications EfficientNet, EfficientNetV2, MobileNetV3, ConvNeXt, RegNet: preprocess_input is "
        "a pass-through, the model rescales inside and takes pixels 0..255"),
}
ADOPTED = "third-party model, contract written by edgetl-runtime adopt"
MAX_ULTRALYTICS_NAMES = 2**20  # characters of the 'names' metadata read


def _adopted(spec: ModelSpec) -> bool:
    return (spec.provenance.weights or "").startswith(ADOPTED)


def ultralytics_metadata(data: bytes, fmt: str) -> dict[str, Any]:
    """Return the ``names`` (list), ``imgsz`` and ``task`` an Ultralytics export stores in its ONNX metadata ({} if none).

    Read as Python literals (``ast.literal_eval``: no code runs), bounded in size.
    """
    if fmt != "onnx":
        return {}
    props = md.onnx_metadata_props(data)
    if "names" not in props or not (props.get("author", "") + props.get("description", "")).lower().count("ultralytics"):
        return {}
    out: dict[str, Any] = {"task": props.get("task")}
    try:
        text = props["names"]
        names = ast.literal_eval(text) if len(text) <= MAX_ULTRALYTICS_NAMES else None
        if isinstance(names, dict) and all(isinstance(k, int) for k in names) and sorted(names) == list(range(len(names))):
            out["names"] = [str(names[i]) for i in range(len(names))]
        imgsz = ast.literal_eval(props.get("imgsz", "None")[:64])
        if isinstance(imgsz, (list, tuple)) and len(imgsz) == 2 and all(isinstance(v, int) and v > 0 for v in imgsz):
            out["imgsz"] = tuple(imgsz)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass  # not what Ultralytics writes: the labels are then asked for
    return out


def _numbers(values: float | Sequence[float] | None, channels: int, what: str) -> tuple[float, ...] | None:
    if values is None:
        return None
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.size not in (1, channels) or not np.isfinite(arr).all():
        raise MetadataError(f"{what} needs 1 or {channels} finite numbers (pixel units, 0..255), got {list(arr)}")
    return tuple(float(v) for v in np.broadcast_to(arr, (channels,)))


def adopt(
    model: str | Path,
    out: str | Path,
    *,
    preset: str | None = None,
    labels: str | Path | Sequence[str] | None = None,
    good_labels: Sequence[str] | None = None,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    channel_order: str | None = None,
    layout: str | None = None,
    resize: str | None = None,
    output: str | None = None,
    threshold: float | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[ModelSpec, list[str]]:
    """Write ``model`` with an edgetl contract to ``out``; return the contract and notes for the user.

    ``preset`` (:data:`PRESETS`) fills what is not given; explicit options win. Nothing is guessed:
    without a preset, a float input needs ``mean``/``std`` (pixel units, 0..255: PyTorch's ImageNet
    values are 123.675, 116.28, 103.53 / 58.395, 57.12, 57.375) and the output needs ``output``.
    ``layout`` is read from the input tensor (where its 1 or 3 channels are) unless given.
    ``size`` (height, width) is for a model exported with dynamic image axes.
    """
    from .labels import distinct_labels, fit_labels, read_labels_and_lines
    from .model import load, open_checked
    from .modelfile import output_size, read_model_file
    from .readout import input_layout

    path, out = Path(model), Path(out)
    if out.resolve() == path.resolve():
        raise MetadataError(f"{out}: adopt writes a new file and keeps {path} as it is; give another output path")
    if preset is not None and preset not in PRESETS:
        raise MetadataError(f"unknown preset {preset!r}; one of {', '.join(PRESETS)}")
    p = PRESETS.get(preset) if preset else None
    fmt, data, artifact = read_model_file(path)
    if artifact is not None:
        raise MetadataError(f"{path}: an imprinted model carries its contract already; adopt its base instead")
    try:
        embedded = md.parse_embedded(md.file_entries(data, fmt))
    except MetadataError as exc:
        raise MetadataError(f"{path}: {exc}") from None
    if embedded.spec is not None and not _adopted(embedded.spec):
        raise MetadataError(f"{path} carries the contract `edgetl export` wrote: it runs as it is (adopt is for "
                            "third-party models)")  # fmt: skip
    notes: list[str] = []
    backend = open_checked(path, fmt, data)
    if len(backend.outputs) != 1:
        raise ModelFormatError(f"{path}: {len(backend.outputs)} outputs {[t.shape for t in backend.outputs]}; adopt "
                               "describes an image classifier with one output (N, classes)")  # fmt: skip
    tensor, classes = backend.input, output_size(backend.output)
    shape = tuple(tensor.shape)
    found = input_layout(shape)
    if len(shape) != 4:
        raise ModelFormatError(f"{path}: input shape {shape} is not an image batch (N, H, W, C) or (N, C, H, W)")
    if layout is not None and found is not None and layout != found:
        axis = "second" if found == "nchw" else "last"
        raise MetadataError(f"{path}: --layout {layout}, but its input {shape} has its channels {axis} ({found})")
    lay = layout or found
    if lay is None:
        raise MetadataError(f"{path}: cannot tell the channels of input {shape}; give --layout nchw or nhwc")
    height, width, channels = (shape[1], shape[2], shape[3]) if lay == "nhwc" else (shape[2], shape[3], shape[1])
    ultra = ultralytics_metadata(data, fmt) if preset == "ultralytics-cls" else {}
    if ultra.get("task") not in (None, "classify"):
        raise MetadataError(f"{path}: an Ultralytics {ultra['task']} model (boxes or masks, not one class per image); "
                            "edgetl-runtime runs image classifiers: export a YOLO -cls model")  # fmt: skip
    if size is None and (height <= 0 or width <= 0):
        size = ultra.get("imgsz")
        if size is None:
            raise MetadataError(f"{path}: its input {shape} has a dynamic image size; give the size it was trained at, "
                                "--size HxW (e.g. 224x224)")  # fmt: skip
        notes.append(f"image size {size[0]}x{size[1]} from the file's Ultralytics metadata (imgsz)")
    if size is not None:
        if (height > 0 and height != size[0]) or (width > 0 and width != size[1]):
            raise MetadataError(f"{path}: --size {size[0]}x{size[1]}, but its input is fixed at {height}x{width}")
        height, width = int(size[0]), int(size[1])
    if channels not in (1, 3):
        raise ModelFormatError(f"{path}: {channels} input channels; an image model takes 1 (grayscale) or 3")
    # Labels: given, else the file's own (Ultralytics), else numbered with a note.
    if labels is not None:
        read, lines = read_labels_and_lines(labels)
        names, fitted = fit_labels(read, classes, str(path))
        names, repeated = distinct_labels(names, str(labels) if isinstance(labels, (str, Path)) else "labels",
                                          lines[len(read) - len(names):])  # fmt: skip
        notes += [n for n in (fitted, repeated) if n]
    elif ultra.get("names"):
        names = tuple(ultra["names"])
        notes.append(f"{len(names)} labels from the file's Ultralytics metadata (names)")
    else:
        names = tuple(str(i) for i in range(classes))
        notes.append(f"no labels given: its {classes} classes are named by their index (give --labels labels.txt)")
    if classes and len(names) != classes:
        raise MetadataError(f"{path}: {len(names)} labels but the model has {classes} outputs")
    good = tuple(good_labels) if good_labels is not None else default_good_labels(names)
    unknown = [g for g in good if g not in names]
    if unknown:
        raise MetadataError(f"good label(s) {unknown} are not among the labels {list(names)[:10]}")
    if not good:
        notes.append("no good label (none is named good, ok, normal, pass...; give --good NAME): predictions have "
                     "a top class but no verdict")  # fmt: skip
    # Input scaling: given, else the preset's; a float input without either is not guessed.
    mean_v, std_v = _numbers(mean, channels, "--mean"), _numbers(std, channels, "--std")
    if mean_v is None and std_v is None and p is not None:
        mean_v, std_v = (p.mean[:channels], p.std[:channels]) if p.mean else (None, None)
        normalization = "runtime" if p.mean else "model"
    elif mean_v is None and std_v is None:
        if np.dtype(tensor.dtype) != np.uint8:
            raise MetadataError(f"{path}: how is its {np.dtype(tensor.dtype).name} input scaled? Give --preset "
                                f"({', '.join(PRESETS)}) or --mean/--std in pixel units (PyTorch's ImageNet values: "
                                "--mean 123.675,116.28,103.53 --std 58.395,57.12,57.375; pixels 0..1: --mean 0 "
                                "--std 255)")  # fmt: skip
        normalization = "model"  # uint8 input: raw pixels, the tensor's quantization maps them
    else:  # one of them given: the other is the preset's, else 0 (mean) or 1 (std)
        preset_mean = p.mean[:channels] if p is not None and p.mean else None
        preset_std = p.std[:channels] if p is not None and p.std else None
        mean_v = mean_v if mean_v is not None else preset_mean or (0.0,) * channels
        std_v = std_v if std_v is not None else preset_std or (1.0,) * channels
        normalization = "runtime"
    if normalization == "runtime" and any(s == 0 for s in std_v):
        raise MetadataError(f"--std must not be 0, got {list(std_v)}")
    kind = output or (p.output if p else None)
    if kind is None:
        raise MetadataError(f"{path}: what does its output hold? Give --output probabilities (a softmax ends the "
                            "graph) or --output logits (the runtime applies the softmax), or a --preset")  # fmt: skip
    order = channel_order or (p.channel_order if p and channels == 3 else "rgb")
    spec = ModelSpec(
        labels=names,
        good_labels=good,
        input=InputSpec(
            height=height, width=width, color_mode="rgb" if channels == 3 else "grayscale",
            resize=resize or (p.resize if p else "bilinear"), normalization=normalization,
            mean=mean_v if normalization == "runtime" else (), std=std_v if normalization == "runtime" else (),
            layout=lay, channel_order=order,
        ),  # fmt: skip
        output=OutputSpec(kind=kind),
        decision=DecisionSpec(threshold=0.5 if threshold is None else float(threshold),
                              threshold_source="default" if threshold is None else "set by adopt"),  # fmt: skip
        provenance=Provenance(
            backbone=path.name, weights=ADOPTED + (f" (preset {preset})" if preset else ""),
            sdk_version=_version(), created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        ),  # fmt: skip
    )
    spec.check_model(shape, classes, str(path))
    entries = {md.METADATA_KEY: spec.to_json()}
    if fmt == "onnx":
        written = md.set_onnx_props(data, entries, drop=(md.EXPORT_KEY,))
    else:
        written = md.embed_tflite_entries(data, {k: v.encode("utf-8") for k, v in entries.items()})
    from .atomic import write_bytes

    write_bytes(out, written)
    try:
        _check_same_outputs(backend, load(out), out)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return spec, notes


def _check_same_outputs(original: Any, adopted: Any, out: Path) -> None:
    """Raise unless the written file's engine gives bit-identical outputs to the original's on one test input."""
    shape = [d if d > 0 else 1 if i == 0 else 0 for i, d in enumerate(original.input.shape)]
    if 0 in shape:  # a dynamic image size: the contract's
        spec = adopted.info.spec
        sides = (spec.channels, spec.input.height, spec.input.width) if spec.input.layout == "nchw" else \
            (spec.input.height, spec.input.width, spec.channels)  # fmt: skip
        shape = [1, *sides]
    rng = np.random.default_rng(0)
    dtype = np.dtype(original.input.dtype)
    x = (rng.integers(0, 256, shape).astype(dtype) if dtype.kind in "ui"
         else rng.standard_normal(shape).astype(dtype))  # fmt: skip
    if not np.array_equal(np.asarray(original.run(x)), np.asarray(adopted._backend.run(x))):
        raise ModelFormatError(f"{out}: the written model computes differently from the original; nothing was kept. "
                               "Report this with the model file")  # fmt: skip


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgetl-runtime")
    except PackageNotFoundError:
        return None


def _scaling(mean: tuple[float, ...], std: tuple[float, ...]) -> str:
    """Return ``(p - mean) / std`` in short words: ``p / 255``, ``(p - 127.5) / 127.5``, or per channel.

    >>> _scaling((0.0, 0.0, 0.0), (255.0, 255.0, 255.0)), _scaling((127.5,) * 3, (127.5,) * 3)
    ('p / 255', '(p - 127.5) / 127.5')
    """
    one = lambda v: f"{v[0]:g}" if len(set(v)) == 1 else "(" + ", ".join(f"{x:g}" for x in v) + ")"  # noqa: E731
    top = "p" if not any(mean) else f"(p - {one(mean)})"
    return top if all(v == 1 for v in std) else f"{top} / {one(std)}"


def describe(spec: ModelSpec) -> list[str]:
    """Return the contract in a few lines, as ``adopt`` prints it."""
    i = spec.input
    scale = "pixels 0..255 (the model normalizes)" if i.normalization == "model" else _scaling(i.mean, i.std)
    labels = ", ".join(spec.labels[:6]) + (f", ... ({len(spec.labels)})" if len(spec.labels) > 6 else "")
    return [f"input    {i.layout.upper()} {i.channel_order.upper() if i.color_mode == 'rgb' else 'grayscale'} "
            f"{i.height}x{i.width}, {i.resize} resize, {scale}",
            f"output   {spec.output.kind}" + (" (the runtime applies the softmax)" if spec.output.kind == "logits" else ""),
            f"labels   {labels}", f"good     {', '.join(spec.good_labels) or '(none: no verdict)'}",
            f"decision defect if 1 - P(good) >= {spec.threshold:g}"]  # fmt: skip


__all__ = ["PRESETS", "Preset", "adopt", "describe"]
